"""The lessons: codelab steps (`step_*.py`) and experiments (`experiment_*.py`).

Installed as `tfbn.tutorials` (setup.cfg's `package_dir`), so `tfbn run STEP` imports and runs
the very file a learner reads, from any directory and from a non-editable install.
"""
