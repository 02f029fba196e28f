"""The data: datasets found and read into uint8 tensors (or lists of image files), batches cut,
normalized and augmented on the device, and the test-time perturbations.

    formats.py   IDX and CIFAR readers and writers       sources.py  where a dataset's files are
    folder.py    your own images: index, decode, cache   stream.py   a folder read every epoch
    batches.py   Split, Splits, Batches (on the device)  loader.py   load_splits: all of the above
    augment.py   training augmentation: crop, flip and the confounders, drawn per batch
    perturb.py   test-time shifts, occlusion, clutter, illumination
"""
