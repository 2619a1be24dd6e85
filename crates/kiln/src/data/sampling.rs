//! Index sets for model selection: stratified folds and bootstrap samples.

use crate::error::{Error, Result};
use crate::rng::Rng;

/// Stream labels, so folds and bootstraps draw numbers no other part of training does.
const FOLD_STREAM: u64 = 0x6b69_6c6e_464f_4c44; // "kilnFOLD"
const BOOTSTRAP_STREAM: u64 = 0x6b69_6c6e_424f_4f54; // "kilnBOOT"

/// `k` stratified folds (scikit-learn's `StratifiedKFold(shuffle=True)` in spirit): each
/// class's samples, shuffled by the seed, are dealt to the folds in turn, continuing where
/// the previous class stopped, so every fold has each class in proportion and the folds'
/// sizes differ by at most one. Each fold's indices are sorted.
pub fn stratified_folds(labels: &[u32], k: usize, seed: u64) -> Result<Vec<Vec<usize>>> {
    if k < 2 || k > labels.len() {
        return Err(Error::setting(
            "--folds",
            k,
            format!(
                "between 2 and {} folds for cross-validation (one sample each at least)",
                labels.len()
            ),
        ));
    }
    let mut by_class: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    for (i, &label) in labels.iter().enumerate() {
        by_class.entry(label).or_default().push(i);
    }
    let mut rng = Rng::derive(seed, FOLD_STREAM);
    let mut folds = vec![Vec::new(); k];
    let mut next = 0;
    for mut members in by_class.into_values() {
        rng.shuffle(&mut members);
        for i in members {
            folds[next].push(i);
            next = (next + 1) % k;
        }
    }
    folds.iter_mut().for_each(|f| f.sort_unstable());
    Ok(folds)
}

/// `n` indices drawn from `0..n` with replacement: bagging member `member`'s sample.
pub fn bootstrap_indices(n: usize, seed: u64, member: usize) -> Vec<usize> {
    let mut rng = Rng::derive(seed, BOOTSTRAP_STREAM.wrapping_add(member as u64));
    let mut drawn: Vec<usize> = (0..n).map(|_| rng.below(n)).collect();
    drawn.sort_unstable(); // the training loop shuffles; sorted keeps subsets cache-friendly
    drawn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_partition_the_samples_and_keep_class_proportions() {
        // 30 of class 0, 20 of class 1, 5 folds: 6 + 4 of each per fold.
        let labels: Vec<u32> = (0..50).map(|i| u32::from(i >= 30)).collect();
        let folds = stratified_folds(&labels, 5, 7).unwrap();
        let mut all: Vec<usize> = folds.concat();
        all.sort_unstable();
        assert_eq!(all, (0..50).collect::<Vec<_>>());
        for fold in &folds {
            let ones = fold.iter().filter(|&&i| labels[i] == 1).count();
            assert_eq!((fold.len(), ones), (10, 4));
        }
        assert_eq!(stratified_folds(&labels, 5, 7).unwrap(), folds);
        assert_ne!(stratified_folds(&labels, 5, 8).unwrap(), folds);
    }

    #[test]
    fn fold_sizes_differ_by_at_most_one_across_classes() {
        let labels: Vec<u32> = (0..23).map(|i| (i % 3) as u32).collect();
        let sizes: Vec<usize> = stratified_folds(&labels, 4, 1)
            .unwrap()
            .iter()
            .map(Vec::len)
            .collect();
        assert!(
            sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
            "{sizes:?}"
        );
    }

    #[test]
    fn impossible_fold_counts_are_errors() {
        assert!(stratified_folds(&[0, 1, 0], 1, 0).is_err());
        let e = stratified_folds(&[0, 1, 0], 4, 0).unwrap_err().to_string();
        assert!(e.contains("between 2 and 3 folds"), "{e}");
    }

    #[test]
    fn bootstrap_draws_with_replacement_deterministically() {
        let a = bootstrap_indices(1000, 3, 0);
        assert_eq!(a.len(), 1000);
        assert!(a.iter().all(|&i| i < 1000));
        let distinct = a.windows(2).filter(|w| w[0] != w[1]).count() + 1;
        // About 1 - 1/e = 63% of the samples appear.
        assert!((580..=680).contains(&distinct), "{distinct}");
        assert_eq!(bootstrap_indices(1000, 3, 0), a);
        assert_ne!(bootstrap_indices(1000, 3, 1), a);
    }
}
