# make verify: the testinfra suite in tests/verify against every host of the inventory.
# Step 1 (playbooks/verify.yml) resolves the settings and lock per host into reports/verify-*/vars/;
# step 2 runs the suite over the same inventory and writes the table, JUnit XML and an HTML page (one
# section per host in each: tests/verify/verify_report.py).

VERIFY_REPORTS ?= reports
DEEP    ?=
LIVE    ?=
OFFLINE ?=
SMALL   ?=

# var: DEEP=1         make verify: re-hash every model file instead of trusting the stat cache
# var: LIVE=1         make verify: start the WebUI as the dummy and generate the guide's test images
# var: OFFLINE=1      make verify: LIVE with the WebUI's network cut (netns on Linux, sandbox-exec on macOS)
# var: SMALL=1        make verify LIVE=1: the small image setting (for CPU-only hosts) instead of the guide's
VERIFY_FLAGS = $(if $(call is_yes,$(DEEP)),--sdenv-deep) \
	$(if $(call is_yes,$(LIVE))$(call is_yes,$(OFFLINE)),--sdenv-live) \
	$(if $(call is_yes,$(OFFLINE)),--sdenv-offline) \
	$(if $(call is_yes,$(SMALL)),--sdenv-small)

.PHONY: verify

verify: controller ## testinfra checks that everything is in place (DEEP=1, LIVE=1, OFFLINE=1)
	@set -e; out="$$SDENV_VAR_VERIFY_REPORTS/verify-$$(date -u +%Y%m%dT%H%M%SZ)-$$$$"; mkdir -p "$$out/vars"; \
	out="$$(cd "$$out" && pwd)"; \
	SDENV_MORE_FOLLOWS=1 SDENV_EPATH_sdenv_verify_out="$$out" $(PLAYBOOK) playbooks/verify.yml; \
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/python -m pytest tests/verify -p no:cacheprovider \
		-q --tb=no -rN -o addopts= \
		--hosts="ansible://all?ansible_inventory=$$SDENV_VAR_INVENTORY" \
		--sdenv-run="$$out" --sdenv-junit="$$out/junit.xml" $(VERIFY_FLAGS)
