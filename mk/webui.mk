# make run: the WebUI in the foreground as the dummy user on this machine (never root).
# Step 1 (playbooks/run.yml) checks it is provisioned and resolves the settings into a temporary file;
# step 2 (roles/webui/files/webui_run.py) starts webui.sh as the dummy in its own process group, waits
# until it answers, prints the URL, and on Ctrl-C stops it and everything it started.

.PHONY: run

run: controller ## Start the WebUI as the dummy user, wait until it answers, print its URL (Ctrl-C stops it)
	@set -e; spec="$$(mktemp "$${TMPDIR:-/tmp}/sdenv-run.XXXXXX")"; \
	SDENV_EPATH_sdenv_run_spec="$$spec" $(PLAYBOOK) playbooks/run.yml || { rm -f "$$spec"; exit 1; }; \
	exec $(VENV)/bin/python roles/webui/files/webui_run.py "$$spec"
