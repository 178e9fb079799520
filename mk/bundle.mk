# The WebUI venv's lock and the offline bundle (role offline_bundle): make lock-venv, bundle, bundle-check.
# The work is done by roles/offline_bundle/files/sdenv_bundle.py on the controller; the bundle's models
# come through the models role (playbooks/bundle.yml), verified like at provision.

PLATFORM  ?=
OUT       ?=
BUNDLE    ?=
INDEX_URL ?=
ARCHIVE   ?=
# lock.yml next to the inventory (Ansible reads group_vars from there); the venv locks sit beside it.
LOCK_FILE  = $(dir $(INVENTORY))group_vars/all/lock.yml
SDENV_BUNDLE_CLI = $(VENV)/bin/python roles/offline_bundle/files/sdenv_bundle.py

# var: PLATFORM=key    make lock-venv / bundle: a platform key of the lock (Darwin-arm64, Linux-x86_64, ...)
# var: OUT=dir         make bundle: the directory to write (ARCHIVE=1 also writes dir.tar)
# var: BUNDLE=dir      make provision / verify / bundle-check: take every byte from this bundle; no network
# var: INDEX_URL=url   make lock-venv / bundle: a package index (PEP 503 simple) instead of PyPI

.PHONY: lock-venv

lock-venv: controller ## Resolve the WebUI venv per platform + Python into hashed requirement files (needs PyPI)
	$(SDENV_BUNDLE_CLI) lock-venv --lock '$(LOCK_FILE)' $(if $(INDEX_URL),--index-url '$(INDEX_URL)') \
		$(foreach p,$(PLATFORM),--platform '$(p)')
