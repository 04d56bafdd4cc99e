"""What a trained world model knows, after the fact: the LeWorldModel paper's analyses (`lemario analyze ...`),
each reading a run's weights and writing JSON and figures into the run's analysis folder; and how its agents compare
with the model-free baseline against env steps (`lemario compare`)."""
