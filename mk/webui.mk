# make run: the WebUI in the foreground as the dummy user on this machine (never root).
# Step 1 (playbooks/run.yml; APP=comfyui: run-comfyui.yml) checks it is provisioned and resolves the settings into a temporary file;
# step 2 (roles/webui/files/webui_run.py) starts webui.sh (APP=comfyui: ComfyUI's main.py) as the dummy in
# its own process group, waits until it answers, prints the URL, and on Ctrl-C stops it and everything it started.

APP ?= webui

.PHONY: run

# var: APP=comfyui    make run: start ComfyUI (role comfyui) instead of the WebUI
run: controller ## Start the WebUI as the dummy user, wait until it answers, print its URL (Ctrl-C stops it)
	@set -e; case "$$SDENV_VAR_APP" in webui|comfyui) ;; *) \
		echo "APP=$$SDENV_VAR_APP is not an app the toolkit installs: use APP=webui (the default) or APP=comfyui." >&2; \
		exit 2;; esac; \
	spec="$$(mktemp "$${TMPDIR:-/tmp}/sdenv-run.XXXXXX")"; \
	playbook=playbooks/run.yml; test "$$SDENV_VAR_APP" = webui || playbook=playbooks/run-$$SDENV_VAR_APP.yml; \
	SDENV_EPATH_sdenv_run_spec="$$spec" $(PLAYBOOK) "$$playbook" || { rm -f "$$spec"; exit 1; }; \
	exec $(VENV)/bin/python roles/webui/files/webui_run.py "$$spec"
