"""Using what a run trained, outside the run: `predict` classifies new image files with the
run's own weights and the run's own preprocessing (the resize-and-crop policy and channels of
convbench.data.folder, the run's image size, normalisation statistics, layout and precision),
read from its checkpoint."""
