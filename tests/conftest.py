"""Test-wide setup. The package tests/__init__.py, which pytest imports before this file, makes the fixture
builders and every module_utils directory importable by their bare names, as Ansible does on a host."""
