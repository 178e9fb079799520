# make upgrade (role webui): move the WebUI to another commit with every pin read from that commit, then per
# host snapshot -> provision -> verify, rolled back by itself when red. The work is done on the controller by
# roles/webui/files/sdenv_upgrade.py (its docstring has the flow and the journal); make rollback first finishes
# an upgrade that was interrupted (kill -9), so either target brings the hosts back to one version, verified.

WEBUI   ?=
COMFYUI ?=
SDENV_UPGRADE_CLI = $(VENV)/bin/python roles/webui/files/sdenv_upgrade.py
# Every value goes as --option=VALUE, one word: ARGS=--diff or ARGS='-e ...' as a word of its own would be read
# by argparse as an option, and the target failed before it began.

# var: WEBUI=ref       make upgrade: the WebUI tag, branch or commit to move to (the old one goes back: a downgrade)
# var: COMFYUI=ref     make upgrade: ComfyUI's tag, branch or commit to move to instead (one app per upgrade)

.PHONY: upgrade upgrade-recover

upgrade: controller ## WEBUI=<tag|commit> or COMFYUI=<tag|commit>: plan from its own pins, re-lock, then per host snapshot/provision/verify (CHECK=1: plan only, LIVE=1)
	@test -z "$$SDENV_VAR_WEBUI" || test -z "$$SDENV_VAR_COMFYUI" || { echo "make upgrade moves one app at a time: give WEBUI= or COMFYUI=, not both (run one upgrade, then the other), so that a red verify rolls back one known change." >&2; exit 2; }
	@test -n "$$SDENV_VAR_WEBUI$$SDENV_VAR_COMFYUI" || { echo "make upgrade needs WEBUI=<tag|commit> (e.g. WEBUI=v1.10.1) or COMFYUI=<tag|commit>: the version to move to." >&2; exit 2; }
	$(SDENV_UPGRADE_CLI) upgrade --inventory "$$SDENV_VAR_INVENTORY" \
		$(if $(COMFYUI),--comfyui="$$SDENV_VAR_COMFYUI",--webui="$$SDENV_VAR_WEBUI") \
		$(if $(LIMIT),--limit="$$SDENV_VAR_LIMIT") $(if $(ARGS),--args="$$SDENV_VAR_ARGS") \
		$(if $(INDEX_URL),--index-url="$$SDENV_VAR_INDEX_URL") \
		$(if $(call is_yes,$(CHECK)),--check) $(if $(call is_yes,$(CONFIRM)),--confirm) \
		$(if $(call is_yes,$(LIVE)),--live)

# make rollback runs this first; the upgrade's own rollbacks (SDENV_UPGRADE_INSIDE) skip it.
rollback: upgrade-recover
upgrade-recover: controller
	@test -n "$$SDENV_UPGRADE_INSIDE" || \
		$(SDENV_UPGRADE_CLI) recover --inventory "$$SDENV_VAR_INVENTORY" $(if $(ARGS),--args="$$SDENV_VAR_ARGS")
