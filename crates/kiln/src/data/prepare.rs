//! A tabular model's input preparation, fitted on its training split and saved with it:
//! the columns' schema (types, categories) and the cleaning statistics. Raw rows pass
//! through cleaning, then one-hot encoding; normalization follows, as for any model.

use serde::{Deserialize, Serialize};

use crate::error::Result;

use super::{Cleaning, CleaningReport, Dataset, FittedCleaning, Stage, TableSchema};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TablePreprocessing {
    pub schema: TableSchema,
    pub cleaning: FittedCleaning,
}

impl TablePreprocessing {
    /// Fits the cleaning on the raw training split; `first_missing` names its first gap.
    pub fn fit(
        schema: TableSchema,
        cleaning: &Cleaning,
        train: &Dataset,
        first_missing: Option<&str>,
    ) -> Result<Self> {
        let categorical: Vec<bool> = (0..schema.columns.len())
            .map(|c| schema.is_categorical(c))
            .collect();
        let cleaning = cleaning.fit(train, &categorical, first_missing)?;
        Ok(TablePreprocessing { schema, cleaning })
    }

    /// Raw rows (one value per column, NaN for a gap) → cleaned, one-hot encoded inputs.
    pub fn apply(&self, raw: &Dataset, stage: Stage) -> Result<(Dataset, CleaningReport)> {
        let names: Vec<String> = self.schema.columns.iter().map(|c| c.name.clone()).collect();
        let (clean, report) = self.cleaning.apply(raw, stage, &names)?;
        Ok((self.schema.one_hot(&clean)?, report))
    }
}
