# sdenv: a pinned, verifiable, reversible local Stable Diffusion WebUI environment.
# `make help` lists the targets and variables. Every target sets up its own controller
# environment (.venv, from requirements.txt) on first use.

SHELL := /bin/bash
.DEFAULT_GOAL := help

# A value given to make (`make X=...` or the environment) is text, never make syntax: `$(shell ...)` in it
# must not run, not even under make -n. Each becomes a simple variable holding exactly what was typed.
# Recipes never put a value on the shell's command line either: every variable in SDENV_VARIABLES reaches
# them as the environment's SDENV_VAR_<NAME> (defined at the end, after mk/*.mk set their defaults), which
# recipes quote as "$$SDENV_VAR_NAME"; ARGS is split by scripts/inventory_check.py, without a shell.
SDENV_VARIABLES = INVENTORY LIMIT CHECK ARGS CONFIRM FORCE ADOPT STRICT JSON BENCH LABEL TO PATHS DEEP LIVE OFFLINE SMALL \
	VERIFY_REPORTS PLATFORM OUT BUNDLE INDEX_URL ARCHIVE MODELS FLEET_CACHE FLEET_CACHE_DIR APP WEBUI COMFYUI N SERIAL MAX_FAIL
as_typed = $(if $(filter command environment,$(firstword $(origin $(1)))),$(eval override $(1) := $$(value $(1))))
$(foreach name,$(.VARIABLES),$(if $(filter command,$(firstword $(origin $(name)))),$(call as_typed,$(name))))
$(foreach name,$(SDENV_VARIABLES),$(call as_typed,$(name)))

VENV      := .venv
INVENTORY ?= inventory/localhost.yml
LIMIT     ?=
CHECK     ?=
ARGS      ?=
CONFIRM   ?=
FORCE     ?=
STRICT    ?=
ADOPT     ?=

# A macOS controller crashes forked Python workers without this (ansible-core's documented setting).
export OBJC_DISABLE_INITIALIZE_FORK_SAFETY := YES
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

yes_words := 1 yes true
is_yes     = $(filter $(yes_words),$(1))

# Every playbook starts with two checks before anything changes: scripts/inventory_check.py (the inventory
# exists and parses, LIMIT matches a host: one sentence and exit 2 otherwise; then it becomes
# ansible-playbook), and the playbook's first play, playbooks/preflight.yml (every setting and lock value).
# --sdenv-make-args is where ARGS and the SDENV_E_* values go (see scripts/inventory_check.py).
PLAYBOOK = $(VENV)/bin/python scripts/inventory_check.py "$$SDENV_VAR_INVENTORY" "$$SDENV_VAR_LIMIT" -- \
	$(VENV)/bin/ansible-playbook -i "$$SDENV_VAR_INVENTORY" \
	$(if $(LIMIT),--limit "$$SDENV_VAR_LIMIT") \
	$(if $(call is_yes,$(CHECK)),--check --diff) \
	-e sdenv_confirm=$(if $(call is_yes,$(CONFIRM)),yes,no) \
	-e sdenv_force=$(if $(call is_yes,$(FORCE)),yes,no) \
	-e sdenv_strict=$(if $(call is_yes,$(STRICT)),yes,no) \
	-e sdenv_adopt=$(if $(call is_yes,$(ADOPT)),yes,no) \
	$(if $(SERIAL),-e sdenv_serial="$$SDENV_VAR_SERIAL") \
	$(if $(MAX_FAIL),-e sdenv_max_fail_percentage="$$SDENV_VAR_MAX_FAIL") \
	--sdenv-make-args

.PHONY: help controller provision reset-dummy remove-dummy test unit integration lint role-docs bench

# var: INVENTORY=path  hosts to act on (default inventory/localhost.yml)
# var: LIMIT=pattern  only these hosts of the inventory
# var: CHECK=1        dry run with diff: report what would change, change nothing
# var: ARGS='...'     extra ansible-playbook arguments (e.g. ARGS='-e sdenv_user_name=sd')
# var: ARGS='...'     never one that skips the preflight (--skip-tags always, --start-at-task, --step)
# var: CONFIRM=yes    no prompt before destructive targets (reset-dummy, remove-dummy, rollback, pin-models)
# var: FORCE=yes      reset-dummy, remove-dummy: act on a user the provision record does not name;
# var: FORCE=yes      provision: reset a WebUI tree that has local changes
# var: ADOPT=yes      provision: take over an existing account the provision record does not name
# var: ADOPT=yes      (after saying what changes; reset-dummy deletes an adopted one only with FORCE=yes)
# var: SERIAL=n       provision: that many hosts (or a percent, 25%) at a time, a rolling run
# var: MAX_FAIL=pct   provision: stop once more than pct percent of a batch failed (default: never)
# var: STRICT=1       provision, verify: a pending model (no URL, no pin: to fetch by hand) is a refusal (CI)
# The help text comes from the `## ` and `# var: ` lines, through the translation catalogs (locale/): with
# LANG=ja_JP.UTF-8 it is Japanese. Python of the .venv when it exists, else the system's (no .venv needed).
help: ## List the targets and the variables they read
	@$(firstword $(wildcard $(VENV)/bin/python) python3) scripts/make_help.py $(MAKEFILE_LIST)

controller: ## Set up .venv from requirements.txt (every target does this first)
	@bash scripts/controller-venv.sh

# var: DEEP=1         make provision: run every role in full (no fast path) and re-hash every model file
provision: controller ## Bring every inventory host to the pinned state
	$(if $(call is_yes,$(DEEP)),SDENV_E_sdenv_deep=true SDENV_E_sdenv_models_deep=true) $(PLAYBOOK) playbooks/provision.yml

reset-dummy: controller ## Delete the dummy user and what provision made for it; recreate it clean
	$(PLAYBOOK) playbooks/reset-dummy.yml

remove-dummy: controller ## Delete the dummy user and what provision made for it, for good: back to zero
	$(PLAYBOOK) playbooks/remove-dummy.yml

test: lint unit integration ## The project's test suite (lint, unit, integration); CI runs exactly this

unit: controller ## Unit tests only (no root needed)
	$(VENV)/bin/python -m pytest tests/unit

integration: controller ## Integration tests (root: real users, packages, git, HTTP on this machine)
	@# The slowest tests are named at the end, so a CI log shows where its time budget goes.
	$(VENV)/bin/python -m pytest --durations=25 --durations-min=10 tests/integration

lint: controller ## ansible-lint (production profile), yamllint, ruff, role READMEs == argument specs, jactionlint
	$(VENV)/bin/yamllint --strict .
	$(VENV)/bin/ansible-lint --profile production
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/python scripts/role_docs.py --check
	$(VENV)/bin/jactionlint --no-online --strict-exit --no-color \
		--shellcheck=$(VENV)/bin/shellcheck --ruff=$(VENV)/bin/ruff .github/workflows/*.yml

role-docs: controller ## Write each role's README variable tables from its meta/argument_specs.yml
	$(VENV)/bin/python scripts/role_docs.py

# var: BENCH=name     make bench: only this benchmark (e.g. BENCH=models)
bench: controller ## Benchmarks, with ratios against peers measured in the same run
	$(VENV)/bin/python -m tests.bench $(if $(BENCH),"$$SDENV_VAR_BENCH")

# Each capability adds its own targets in mk/<capability>.mk.
include $(sort $(wildcard mk/*.mk))

$(foreach name,$(SDENV_VARIABLES),$(eval export SDENV_VAR_$(name) := $$($(name))))
