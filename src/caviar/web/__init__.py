"""The dashboard (FastAPI) and the static report: pictures of studies, read from storage."""
