# The fleet cache (roles/offline_bundle/tasks/fleet_cache_*.yml): make provision fetches every byte once on the
# controller and each host copies from it over its own connection. Only a value given here reaches Ansible:
# otherwise sdenv_fleet_cache from settings.yml (default auto) decides.

FLEET_CACHE ?=

# var: FLEET_CACHE=auto  make provision: fetch every byte once on the controller for all hosts (auto: >1 host; always; never)
ifneq ($(FLEET_CACHE),)
export SDENV_E_sdenv_fleet_cache := $(FLEET_CACHE)
endif

# var: FLEET_CACHE_DIR=  make fleet-cache-prune: the controller's fleet cache (default: sdenv_fleet_cache_dir from the inventory's settings.yml)
FLEET_CACHE_DIR ?=

.PHONY: fleet-cache-prune

fleet-cache-prune: controller ## remove from the controller's fleet cache the files no lock names any more
	@$(VENV)/bin/python roles/offline_bundle/files/sdenv_bundle.py prune-cache \
		--cache-dir "$$SDENV_VAR_FLEET_CACHE_DIR" --inventory "$$SDENV_VAR_INVENTORY"
