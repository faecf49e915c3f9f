"""The operator's side: queue administration, the job log's report and timeline, the demo and its embedded server."""
