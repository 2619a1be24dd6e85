//! A tabular model's input preparation, fitted on its training split and saved with it:
//! the columns' schema (types, categories) and the cleaning statistics. Raw rows pass
//! through cleaning, then one-hot encoding; normalization follows, as for any model.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::{Cleaning, CleaningReport, Dataset, FittedCleaning, MissingValues, Stage, TableSchema};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TablePreprocessing {
    pub schema: TableSchema,
    pub cleaning: FittedCleaning,
}

impl TablePreprocessing {
    /// Checks what a model file says of its table against what `predict` assumes: one
    /// fill value and bound per column at most, finite, each bound low ≤ high. The error
    /// names the field (`kiln.table.cleaning.bounds[2]`) and its value.
    pub fn validate(&self) -> Result<()> {
        let columns = self.schema.columns.len();
        let c = &self.cleaning;
        // Imputing fills every gap from `fill`, so it needs a value for every column.
        let imputing = c.missing.is_some_and(|m| m != MissingValues::Drop);
        for (field, len, needed) in [
            ("fill", c.fill.len(), imputing),
            ("bounds", c.bounds.len(), false),
        ] {
            if len != columns && (needed || len != 0) {
                let expected = match needed {
                    true => format!("one per column ({columns}), as missing values are imputed"),
                    false => format!("none or one per column ({columns})"),
                };
                return Err(Error::mismatch(
                    format!("kiln.table.cleaning.{field}"),
                    expected,
                    len,
                ));
            }
        }
        if let Some((i, v)) = c.fill.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::setting(
                format!("kiln.table.cleaning.fill[{i}]"),
                v,
                "a finite number",
            ));
        }
        let bad_bound = c.bounds.iter().enumerate().find_map(|(i, b)| {
            let [low, high] = (*b)?;
            (!(low.is_finite() && high.is_finite() && low <= high)).then_some((i, low, high))
        });
        if let Some((i, low, high)) = bad_bound {
            return Err(Error::setting(
                format!("kiln.table.cleaning.bounds[{i}]"),
                format!("[{low}, {high}]"),
                "finite [low, high] with low ≤ high",
            ));
        }
        Ok(())
    }

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
