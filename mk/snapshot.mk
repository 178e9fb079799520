# Snapshots (role snapshot): make snapshot, snapshots, rollback, snapshot-check, snapshot-prune.
# Values reach the playbooks through the environment (make's export), so no shell quoting is involved.

LABEL ?=
TO    ?=
PATHS ?=
JSON  ?=

# var: LABEL=name      make snapshot: a label for the snapshot (letters, digits, . _ -)
# var: TO=id|label     make rollback: the snapshot to restore (an id or label from make snapshots, latest)
# var: PATHS='p ...'   make rollback: only these absolute paths inside the snapshot's roots (outputs/ too)
# var: JSON=1          make snapshots: print the list as JSON for tools
# var: DEEP=1          make snapshot-check: re-hash every stored object

.PHONY: snapshot snapshots rollback snapshot-check snapshot-prune

snapshot: export SDENV_SNAPSHOT_LABEL := $(LABEL)
snapshot: controller ## Time Machine-style snapshot of the working environment (LABEL=...)
	$(PLAYBOOK) playbooks/snapshot.yml

# JSON=1: the play's own output goes to standard error; standard output is the JSON file it writes.
snapshots: export SDENV_SNAPSHOT_JSON := $(if $(call is_yes,$(JSON)),1)
snapshots: controller ## List snapshots: id, time, kind, label, files, size, new bytes, pinned (JSON=1)
	@if [ "$$SDENV_SNAPSHOT_JSON" = 1 ]; then \
	  export SDENV_SNAPSHOT_JSON_FILE="$$(mktemp)" && trap 'rm -f "$$SDENV_SNAPSHOT_JSON_FILE"' EXIT && \
	  $(PLAYBOOK) playbooks/snapshots.yml >&2 && cat "$$SDENV_SNAPSHOT_JSON_FILE"; \
	else \
	  $(PLAYBOOK) playbooks/snapshots.yml; \
	fi

rollback: export SDENV_SNAPSHOT_TO := $(TO)
rollback: export SDENV_SNAPSHOT_PATHS := $(PATHS)
rollback: controller ## Restore TO=<id>|<label>|latest (PATHS=...); plan first, keeps outputs/ (CHECK=1, CONFIRM=yes)
	$(PLAYBOOK) playbooks/rollback.yml

snapshot-check: export SDENV_SNAPSHOT_DEEP := $(DEEP)
snapshot-check: controller ## Verify the snapshot store (DEEP=1 re-hashes the content)
	$(PLAYBOOK) playbooks/snapshot-check.yml

snapshot-prune: controller ## Forget snapshots by the retention policy and delete unused content
	$(PLAYBOOK) playbooks/snapshot-prune.yml
