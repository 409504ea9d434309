"""Networks: seed 000's CNNCF (student and teachers) and CNNRF, seed 004's 3D CSAC-Net, a 3D ResNet.

Build them by name with :func:`covidscan.models.zoo.build_model`; save/load with
:func:`covidscan.models.zoo.save_model` / :func:`covidscan.models.zoo.load_model`.
"""
