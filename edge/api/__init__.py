"""HTTP handlers: parse the request, call a service, answer. One module per resource."""
