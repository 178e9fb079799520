# Model files (role models): pin the lock entries that have no SHA256.

MODELS ?=

# var: MODELS="a b"    make pin-models: pin these lock entries (default: every entry without a SHA256)

.PHONY: pin-models

pin-models: controller ## Download unpinned models, show name/size/SHA256/source; CONFIRM=yes writes lock.yml
	$(if $(MODELS),SDENV_E_sdenv_models_pin_list="$$SDENV_VAR_MODELS") $(PLAYBOOK) playbooks/pin-models.yml
