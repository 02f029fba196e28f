"""After the run: listing runs (runs), testing saved weights again (retest), grouping runs over
seeds (compare), figures and the HTML page (report), text tables (tables), TensorBoard served
(board)."""
