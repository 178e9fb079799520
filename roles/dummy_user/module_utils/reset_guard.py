"""The safety checks before reset-dummy deletes an account: one sentence per refusal, or None.

Kept apart from the code that deletes, as a pure function of facts, so every refusal is unit-tested and
the module can run it both before asking for confirmation and again right before acting.
"""


def reset_refusal(name, account, first_regular_uid, invoking_users, console_users, recorded, force):
    """Return why resetting `name` is refused, or None when it may go ahead.

    account: the live account ({"uid": ...}) or None when it does not exist (nothing left to delete;
      the record's leftovers may still be removed, so a reset killed half-way converges).
    invoking_users: who runs make (USER, SUDO_USER, the SSH login user).
    recorded: the provision record's entry for `name`, or None.
    force: FORCE=yes, which lifts only the "not made by the toolkit" check.
    """
    if name == "root" or (account is not None and account["uid"] == 0):
        return f"Refusing to reset {name}: it is the root account."
    if name in {u for u in invoking_users if u}:
        return (
            f"Refusing to reset {name}: it is the account running this command; run it from another account."
        )
    if account is not None:
        if account["uid"] < first_regular_uid:
            return (
                f"Refusing to reset {name}: its uid {account['uid']} is below {first_regular_uid}, the first"
                " regular uid on this system, so it is a system account."
            )
        if name in console_users:
            return f"Refusing to reset {name}: it is logged in at the console; log it out first."
    if not force:
        if not recorded or not recorded.get("created_by_toolkit"):
            return (
                f"Refusing to reset {name}: the provision record does not say this toolkit created it;"
                " run with FORCE=yes if you are sure."
            )
        if account is not None and recorded.get("uid") != account["uid"]:
            return (
                f"Refusing to reset {name}: its uid is {account['uid']} but the provision record says"
                f" {recorded.get('uid')}, so it is not the account the toolkit created; FORCE=yes to override."
            )
    return None
