# The two commands a newcomer needs: `make demo` and `make test`.
.PHONY: setup demo test services services-down lint

setup:
	bash deploy/setup.sh

demo:
	bash deploy/demo.sh

test:
	bash deploy/test.sh

services: setup
	.venv/bin/streamrank services up

services-down:
	.venv/bin/streamrank services down

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check streams models shadow tests bench
