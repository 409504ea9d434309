"""Networks: Liang et al.'s CNNCF (student and teachers) and CNNRF, Yao et al.'s 3D CSAC-Net, a 3D ResNet.

Build them by name with :func:`covidscan.models.zoo.build_model`; save/load with
:func:`covidscan.models.zoo.save_model` / :func:`covidscan.models.zoo.load_model`.
"""
