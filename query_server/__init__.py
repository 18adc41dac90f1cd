"""The query server process: ``chronos.v1.QueryService`` over the Elasticsearch read model."""
