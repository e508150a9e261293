# The README's commands. Everything runs from a virtualenv in .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: demo test test-quick run worker lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

## make demo: one double opt-in signup end to end on the embedded defaults
demo: $(STAMP)
	$(BIN)/newsletter init
	$(BIN)/newsletter db upgrade
	$(BIN)/newsletter demo

# Parallel test workers (pytest-xdist; 0 runs in one process). The tests wait on SMTP, PostgreSQL
# and worker subprocesses, so on a 2-core machine more workers than cores still pays.
TEST_WORKERS ?= 3
# worksteal: an idle worker takes tests queued on a busy one; the slow files go first (conftest).
XDIST = -n $(TEST_WORKERS) --dist worksteal

## make test: the whole suite (real Redis, SQLite and PostgreSQL, SMTP on loopback, Chromium)
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest $(XDIST) $(PYTEST_ARGS)

## make test-quick: the edit-test loop (SQLite only, no browser, no Postfix)
test-quick: $(STAMP)
	$(BIN)/pytest $(XDIST) -m "not browser and not postfix" --db sqlite $(PYTEST_ARGS)

## make run: gunicorn on :8000 and one worker, for real use
run: $(STAMP)
	$(BIN)/newsletter db upgrade
	$(BIN)/newsletter worker & \
	  trap 'kill $$!' EXIT; \
	  $(BIN)/gunicorn --workers 2 --threads 4 --bind 0.0.0.0:8000 wsgi:app

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/signup.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache tests/artifacts

## make translations: re-extract every string, update the de/fr catalogs, compile them (docs/languages.md)
.PHONY: translations
translations: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg --no-location --sort-output --project newsletter \
	  -o newsletter/translations/messages.pot .
	$(BIN)/pybabel update -i newsletter/translations/messages.pot -d newsletter/translations \
	  --ignore-obsolete
	$(BIN)/pybabel compile -d newsletter/translations --statistics
