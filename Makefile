# The two commands a newcomer needs: `make demo` and `make test`.
.PHONY: setup demo test test-cluster test-unit services services-down lint

setup:
	bash deploy/setup.sh

demo:
	bash deploy/demo.sh

# All three tiers, with the services, models and demo corpus they need (deploy/test.sh).
test:
	bash deploy/test.sh

# The integration tier again, against a three-broker Kafka cluster and a Redis Cluster.
test-cluster:
	bash deploy/test.sh --cluster

# The unit tier alone: no services, no shared data, under a minute.
test-unit:
	.venv/bin/python -m pytest tests/unit

services: setup
	.venv/bin/streamrank services up

services-down:
	.venv/bin/streamrank services down

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check streams models shadow tests bench
