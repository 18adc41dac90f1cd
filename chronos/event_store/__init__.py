"""The PostgreSQL event store: schema, migrations, the group-commit writer and readers."""
