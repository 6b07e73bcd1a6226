"""Storage adapters: Postgres (asyncpg), the change follower, the embedded server."""
