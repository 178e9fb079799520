"""What the WebUI writes into its own tree as it runs, for itself or for the user.

make provision ends with a known-good snapshot only when the environment changed since the last one
(snapshotter.take, only_if_changed). Starting the WebUI (make run, make verify LIVE=1, make upgrade LIVE=1)
writes into its tree; none of that may make a converged tree look changed, nor may a rollback put an old copy
over what the user has set or made since. Not a setting: which files the app writes is the app's code.

Decided per path from the WebUI v1.10.1's code (its data_path is the tree: the toolkit passes no --data-dir):
Kept: a rollback leaves them as they are (as it leaves sdenv_snapshot_user_data, outputs/ and log/), so the
known-good snapshot does not count a change there. The toolkit pins nothing in them.
- params.txt: processing.py writes the last generation's parameters at every generation (unless
  --no-prompt-history): make verify LIVE=1's test images write it.
- styles.csv: shared.styles_filename; styles.py writes it when the user saves a style.
- cache/: modules/cache.py's diskcache (model hashes at the first generation with a model, extensions' git
  data; SD_WEBUI_CACHE_DIR's default).
- config_states/: config_states.py makes it when the UI is built; ui_extensions.py writes the user's backups of
  the extensions' state there.
Restored: they hold keys the toolkit pins, so a rollback puts them back (make verify checks those keys; a
tampered one is what a rollback repairs). A change there alone is not counted either: the webui role's
"Merge the guide's defaults" tasks put the pinned keys back and report that change themselves, in the same run,
before the snapshot. The snapshot is still taken (changed=false), so the copy a rollback puts back is the
newest, not an older one over the user's settings.
- config.json: --ui-settings-file's default (modules/cmd_args.py). The app writes it whenever the user applies
  Settings (ui_settings.py), changes a quicksetting (ui.py), POSTs /sdapi/v1/options (api/api.py) or turns an
  extension on or off (ui_extensions.py).
- ui-config.json: --ui-config-file's default. ui.py create_ui() calls ui_loadsave.dump_defaults() whenever the
  components' defaults differ from the file: at the first start with the UI after the toolkit merged its keys,
  and after every version change (make run; make verify starts the API only, --nowebui, which builds no UI).
Counted (a change there is the environment's): cache.json (the models role pre-seeds it; the app only reads
it, cache.convert_old_cached_data), extensions/ (code the user installs, whose packages are in the venv rolled
back with it; the app makes it empty at import, and a new empty folder is not counted, see
snapshotter.same_environment), models/ (the models role's; the app makes its empty folders), tmp/ (written
only when cache.json is unreadable), the tracked files, repositories/ and venv/. __pycache__ is left out
everywhere by the snapshotter.
"""

WEBUI_KEPT = ("params.txt", "styles.csv", "cache", "config_states")
WEBUI_RESTORED = ("config.json", "ui-config.json")
# ComfyUI's own scratch, beside the user's folders (sdenv_snapshot_comfyui_user_data: output, input, user):
# temp/ holds previews; main.py empties it at every start and exit, so only a killed run leaves files there.
COMFYUI_KEPT = ("temp",)


def kept_paths(tree, user_data, app_kept=WEBUI_KEPT):
    """The paths of an app's tree (relative) a rollback keeps as they are: its user data (from the settings)
    and what the app writes for itself that the toolkit pins nothing in, once each; none without a tree."""
    if not tree:
        return []
    return list(dict.fromkeys([*user_data, *app_kept]))
