# A fleet lab: N Linux hosts on this machine (own root filesystem, user database, network namespace and
# address, sshd with key authentication, a sudo login user), for trying a fleet without machines. Built by
# tests/fixtures/fleet_lab.py, the same code the integration tests' fleet fixture uses. Root only (namespaces,
# mounts, veth pairs). The hosts reach nothing but the controller's SSH: no upstream of their own.

N         ?= 4
FLEET_LAB ?= fleet-lab

# var: N=count        make fleet-lab: how many lab hosts (default 4)

.PHONY: fleet-lab fleet-lab-down

fleet-lab: controller ## Start N local test hosts over SSH (N=4) and write fleet-lab/inventory/hosts.yml
	$(VENV)/bin/python tests/fixtures/fleet_lab.py up --background --dir "$(CURDIR)/$(FLEET_LAB)" \
		--n "$$SDENV_VAR_N" --group-vars "$(CURDIR)/inventory/group_vars"

fleet-lab-down: controller ## Stop the fleet lab: its hosts, namespaces, mounts and addresses; remove its directory
	$(VENV)/bin/python tests/fixtures/fleet_lab.py down --dir "$(CURDIR)/$(FLEET_LAB)"
