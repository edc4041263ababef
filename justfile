# dcorch-trio developer commands. Use ./just <recipe> on a fresh machine: it sets up .venv first.

set shell := ["bash", "-euo", "pipefail", "-c"]

# list the recipes
default:
    @just --list

# run the service with its embedded defaults (SQLite, simulated clouds); Ctrl-C stops it
run *ARGS:
    dcorch serve --upgrade-db {{ARGS}}

# run the whole test suite (SQLite always; PostgreSQL when it is installed)
test *ARGS:
    scripts/ensure-postgres || true
    python -m pytest {{ARGS}}

# lint, async lint and type check
check:
    ruff check actors dcorch bench tests
    ruff format --check actors dcorch bench tests
    # ASYNC127 suggests a different HTTP library; ASYNC114 wants task_status on every startable fn
    flake8-async --disable ASYNC127,ASYNC114 $(git ls-files -co --exclude-standard 'actors/*.py' 'dcorch/*.py')
    mypy

# format and autofix what ruff can
lint:
    ruff format actors dcorch bench tests
    ruff check --fix actors dcorch bench tests

# full bench run: writes JSON, markdown and PNG plots under bench/results/
bench *ARGS:
    scripts/ensure-postgres || true
    dcorch bench {{ARGS}}

# cut-down bench run (under 60 s): prints the ratio table
bench-quick *ARGS:
    scripts/ensure-postgres || true
    dcorch bench --quick {{ARGS}}

# create or upgrade the database schema
db-upgrade:
    dcorch db upgrade
