"""Patient-grouped splits of the sub-datasets (Liang et al. 2020, Table 1; Yao et al. 2021, centre-held-out).

The order of work, for one manifest:

1. **Groups first.** Records of one patient form a group. Near-duplicate images (the same picture
   published by two sources, perhaps under two patient pseudonyms) are merged into one group: a
   64-bit perceptual hash (pHash: DCT of a 32x32 thumbnail; or dHash) of a representative 2D image
   (the X-ray, the 2D CT image, or a CT volume's middle slice) and union-find over pairs at Hamming
   distance <= ``SplitsConfig.phash_max_distance`` within a modality (``hash_method: none`` skips
   this); identical stored arrays
   (``content_sha256``) are merged too. Pairs are merged closest first, and never into a group of
   more than ``SplitsConfig.near_duplicate_max_patients`` patients (look-alike chains are not copies).
2. **Sub-datasets** are selections of the manifest (``params.subsets``: modality x sources x
   classes). Sources are ``"public"``/``"hospital"`` (the ``origin`` column), ``"all"``, or a list of
   source names. Sub-datasets in ``SplitsConfig.clinical_subsets`` (CADS; names that are not sub-datasets are ignored) keep only records that
   have clinical indicators and annotations.
3. **Train-val / test (TTSF).** The paper used scikit-learn's ``train_test_split``. We apply it to
   the *groups* of a sub-dataset, stratified by the group's class (its label; the most frequent one
   when a group mixes labels), so that no group can straddle the parts; records follow their group.
   Classes with a single group are pooled (or join the largest class); when stratifying is
   impossible (too few groups) the split is unstratified and the summary says so.
4. **Folds.** ``StratifiedGroupKFold(n_folds, shuffle=True)`` on the train-val records (y = label,
   groups = group_id) gives the folds the teachers use; test records have fold -1.
5. **One assignment per group across sub-datasets.** Sub-datasets are split smallest first (fewest
   groups; ties by name). The first one that contains a group decides its part and fold; a later
   sub-dataset containing the same group inherits them and splits only its new groups (so CADS gets
   its own stratified split and CTHDS, its superset, inherits it). So a patient (or a near-duplicate image) is never
   train-val in one sub-dataset and test in another, and the mixed sets (``SplitsConfig.mixed``:
   XMDS = XPDS + XHDS, CTMDS = CTPDS + CTHDS) are the part-by-part unions of their members, e.g.
   XMTS = XPTS + XHTS, with consistent folds.
6. **Centre-held-out (Yao et al. 2021).** Sub-datasets in ``SplitsConfig.centre_subsets`` are split by
   centre instead: test = records from ``centre_test``, train-val = the other centres (grouped,
   stratified folds inside). Records of a group that also has test-centre records are left out of
   train-val (counted in the summary). These sub-datasets do not take part in step 5.

Every row also carries ``label``, Yao et al.'s binary label (covid19 = 1, else 0) and its subset
(S1 covid19, S2 normal = NP, S3 pneumonia = CAP; "" otherwise).

Sub-dataset names follow the paper: a name ending in ``DS`` has parts ``...TS`` (train-val) and
``...VS`` (test): :func:`part_name`.

Modules:

* :mod:`~covidscan.data.splits.grouping`: step 1, perceptual hashes and patient/near-duplicate groups.
* :mod:`~covidscan.data.splits.assign`: steps 2-6, sub-dataset selection, TTSF, folds, the split table.
"""

from covidscan.data.splits.assign import (
    PARTS,
    YAO_SUBSETS,
    SPLIT_COLUMNS,
    SplitResult,
    _annotate,
    _dealt_folds,
    _folds,
    _group_strata,
    _random_state,
    _subset_summary,
    _ttsf,
    make_splits,
    part_name,
    read_splits,
    select_subset,
    split_manifest,
    write_splits,
)
from covidscan.data.splits.grouping import (
    HASH_BITS,
    Grouping,
    _bits_to_int,
    _normalise,
    _UnionFind,
    assign_groups,
    hash_records,
    image_hash,
    near_duplicate_edges,
    near_duplicate_pairs,
    representative_image,
)

__all__ = [
    "HASH_BITS",
    "PARTS",
    "YAO_SUBSETS",
    "SPLIT_COLUMNS",
    "Grouping",
    "SplitResult",
    "assign_groups",
    "hash_records",
    "image_hash",
    "make_splits",
    "near_duplicate_edges",
    "near_duplicate_pairs",
    "part_name",
    "read_splits",
    "representative_image",
    "select_subset",
    "split_manifest",
    "write_splits",
]
