#!/usr/bin/python
"""Ansible module: write a text file's whole content, given as an argument, as the account running it."""

DOCUMENTATION = r"""
module: text_file
short_description: Write a file whose whole content is an argument (a rendered template), as the running account
description:
  - Writes I(content) to I(path) atomically (temp file beside it, fsync, rename) and only when the bytes or the
    mode differ, so a second run reports no change. A link at I(path) is refused, never followed, and
    its directory is reached with no link another account could have made.
  - Why not ansible.builtin.template or copy when the task becomes the dummy. Those actions put the file in a
    temporary directory of the login user first, then need the dummy to read it. Over SSH with a non-root
    login, that needs setfacl (the acl package, often missing on Linux) or a world-readable file. This
    module's content travels with its arguments over pipelining, on standard input, and no file is involved.
  - Render the content on the controller with C(lookup('ansible.builtin.template', ...)).
options:
  path: {description: The file to write., type: path, required: true}
  content: {description: The file's whole content (text; written as UTF-8)., type: str, required: true}
  mode: {description: The file's mode (octal string)., type: str, default: "0644"}
  below:
    description: When given, the missing folders between this existing folder and the file's are made first
      (0755, the running account's), with no link followed below it.
    type: path
"""

EXAMPLES = r"""
- name: Write webui-user.sh as the dummy
  text_file:
    path: /home/dummy/stable-diffusion-webui/webui-user.sh
    content: "{{ lookup('ansible.builtin.template', 'webui-user.sh.j2') }}"
    mode: "0755"
  become: true
  become_user: dummy
"""

RETURN = r"""
path: {description: The file written or left as it was., type: str, returned: always}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sdenv_atomic import ensure_file_content


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "content": {"type": "str", "required": True},
            "mode": {"type": "str", "default": "0644"},
            "below": {"type": "path"},
        },
        supports_check_mode=True,
    )
    p = module.params
    data = p["content"].encode("utf-8")
    try:
        mode = int(p["mode"], 8)
    except ValueError:
        module.fail_json(msg=f"mode {p['mode']!r} is not an octal mode: give one such as 0644.")
    try:
        changed, before = ensure_file_content(p["path"], data, mode, p["below"], module.check_mode)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        module.fail_json(
            msg=f"{p['path']} could not be written ({reason}): check that its folder exists and is yours."
        )
    module.exit_json(
        changed=changed,
        path=p["path"],
        diff={
            "before": (before or b"").decode("utf-8", "replace"),
            "after": p["content"],
            "before_header": p["path"],
            "after_header": p["path"],
        },
    )


if __name__ == "__main__":
    main()
