"""dcorch v1 REST API."""
