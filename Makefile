# The two commands of the README: `make up` runs the centre, `make test` runs the tests.
.PHONY: up test setup lint

setup:
	@scripts/setup

# Set up and start the whole centre on the embedded defaults, with a demo of real calls.
up: setup
	.venv/bin/hotline up

# Lint, then every test: real Asterisk, real SIP calls, SQLite and PostgreSQL, Redis both ways.
test: setup
	@scripts/services
	.venv/bin/ruff check .
	.venv/bin/lint-imports --no-cache
	.venv/bin/python -m pytest
