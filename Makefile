.PHONY: run test bench lint format

run:  ## the whole service: web, worker, beat, local Redis (SQLite by default)
	bash scripts/run.sh

test:  ## ruff, migration check, pytest on SQLite and PostgreSQL
	bash scripts/test.sh

bench:  ## performance benchmarks (ratios against a baseline measured in the same run)
	bash scripts/bench.sh

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

format:
	.venv/bin/ruff format . && .venv/bin/ruff check --fix .
