"""EfficientDet object detection, the default task: its stages are the top-level folders (spec/, model/, trainer/,
export/, engines/, calib/, infer/, evaluation/, prune/, integrations/), and `task.py` registers the parts they
look up by task name (`effdet_rt.tasks`), as every other task does from its own folder.
"""
