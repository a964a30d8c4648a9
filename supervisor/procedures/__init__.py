"""The collection contract: result sets, the T-SQL that produces them, the benign wait list."""
