# Snapshots (role snapshot): make snapshot, snapshots, rollback, snapshot-check, snapshot-prune.
# Values reach the playbooks through the environment (make's export), so no shell quoting is involved.

LABEL ?=
TO    ?=
PATHS ?=

# var: LABEL=name      make snapshot: a label for the snapshot (letters, digits, . _ -)
# var: TO=id|latest    make rollback: the snapshot to restore (an id from make snapshots, or a unique prefix)
# var: PATHS='p ...'   make rollback: only these absolute paths inside the snapshot's roots
# var: DEEP=1          make snapshot-check: re-hash every stored object

.PHONY: snapshot snapshots rollback snapshot-check snapshot-prune

snapshot: export SDENV_SNAPSHOT_LABEL := $(LABEL)
snapshot: controller ## Time Machine-style snapshot of the working environment (LABEL=...)
	$(PLAYBOOK) playbooks/snapshot.yml

snapshots: controller ## List snapshots: id, time, files, size, new bytes, pinned, label
	$(PLAYBOOK) playbooks/snapshots.yml

rollback: export SDENV_SNAPSHOT_TO := $(TO)
rollback: export SDENV_SNAPSHOT_PATHS := $(PATHS)
rollback: controller ## Restore TO=<id>|latest (PATHS=...); takes an undo snapshot first (CONFIRM=yes)
	$(PLAYBOOK) playbooks/rollback.yml

snapshot-check: export SDENV_SNAPSHOT_DEEP := $(DEEP)
snapshot-check: controller ## Verify the snapshot store (DEEP=1 re-hashes the content)
	$(PLAYBOOK) playbooks/snapshot-check.yml

snapshot-prune: controller ## Forget snapshots by the retention policy and delete unused content
	$(PLAYBOOK) playbooks/snapshot-prune.yml
