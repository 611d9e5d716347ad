"""The UTA paper's published numbers (Tables 1 and 2) as CSV data, for the tables' reference rows."""
