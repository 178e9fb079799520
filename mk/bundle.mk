# The WebUI venv's lock and the offline bundle (role offline_bundle): make lock-venv, bundle, bundle-check.
# The work is done by roles/offline_bundle/files/sdenv_bundle.py on the controller; the bundle's models
# come through the models role (playbooks/bundle.yml), verified like at provision.

PLATFORM  ?=
OUT       ?=
BUNDLE    ?=
INDEX_URL ?=
ARCHIVE   ?=
# lock.yml next to the inventory (Ansible reads group_vars from there); the venv locks sit beside it.
LOCK_FILE  = "$$(dirname -- "$$SDENV_VAR_INVENTORY")/group_vars/all/lock.yml"
SDENV_BUNDLE_CLI = $(VENV)/bin/python roles/offline_bundle/files/sdenv_bundle.py

# var: PLATFORM=key    make lock-venv / bundle: a platform key of the lock (Darwin-arm64, Linux-x86_64, ...)
# var: OUT=dir         make bundle: the directory to write (ARCHIVE=1 also writes dir.tar)
# var: BUNDLE=dir      make provision / verify / bundle-check: take every byte from this bundle; no network
# var: INDEX_URL=url   make lock-venv / bundle: a package index (PEP 503 simple) instead of PyPI

.PHONY: lock-venv

lock-venv: controller ## Resolve the WebUI venv per platform + Python into hashed requirement files (needs PyPI)
	set -f; set --; for p in $$SDENV_VAR_PLATFORM; do set -- "$$@" --platform "$$p"; done; \
	$(SDENV_BUNDLE_CLI) lock-venv --lock $(LOCK_FILE) $(if $(INDEX_URL),--index-url "$$SDENV_VAR_INDEX_URL") "$$@"

.PHONY: bundle bundle-check

bundle: controller ## PLATFORM=... OUT=dir: everything a provision fetches, for a machine with no network
	@set -e; test -n "$$SDENV_VAR_OUT" || { echo "make bundle needs OUT=<directory> (and PLATFORM=<key>, default this machine's)." >&2; exit 2; }; \
	spec="$$(mktemp "$${TMPDIR:-/tmp}/sdenv-bundle.XXXXXX")"; trap 'rm -f "$$spec"' EXIT; \
	SDENV_EPATH_sdenv_bundle_out="$$SDENV_VAR_OUT" SDENV_E_sdenv_bundle_platform="$$SDENV_VAR_PLATFORM" \
		SDENV_E_sdenv_bundle_spec="$$spec" $(PLAYBOOK) playbooks/bundle.yml; \
	$(SDENV_BUNDLE_CLI) bundle --spec "$$spec" --out "$$SDENV_VAR_OUT" \
		$(if $(INDEX_URL),--index-url "$$SDENV_VAR_INDEX_URL") $(if $(call is_yes,$(ARCHIVE)),--archive)

bundle-check: controller ## BUNDLE=dir: verify a bundle against its SHA256SUMS and the lock
	@test -n "$$SDENV_VAR_BUNDLE" || { echo "make bundle-check needs BUNDLE=<directory>." >&2; exit 2; }
	$(SDENV_BUNDLE_CLI) check --lock $(LOCK_FILE) --bundle "$$SDENV_VAR_BUNDLE"

# BUNDLE=dir reaches every playbook (provision takes every byte from it) and the controller bootstrap
# (scripts/controller-venv.sh installs the controller's wheels from it with no index).
export SDENV_EPATH_sdenv_bundle := $(BUNDLE)
export SDENV_BUNDLE := $(if $(BUNDLE),$(if $(filter /%,$(firstword $(BUNDLE))),,$(CURDIR)/)$(BUNDLE))
