//! Writing CSV: one record at a time, quoted by the `csv` crate (a cell holding a comma,
//! a quote or a line break is quoted, quotes doubled), for the files kiln writes as it
//! goes (`history.csv`, the CSVLogger, `trials.csv`).

/// One CSV line, `\n`-terminated.
pub fn csv_record<S: AsRef<str>>(cells: &[S]) -> String {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    writer
        .write_record(cells.iter().map(|c| c.as_ref()))
        .expect("writing to memory cannot fail");
    let bytes = writer.into_inner().expect("flushing to memory cannot fail");
    String::from_utf8(bytes).expect("UTF-8 cells make UTF-8 CSV")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_the_cells_that_need_it() {
        assert_eq!(csv_record(&["1", "0.5", ""]), "1,0.5,\n");
        assert_eq!(
            csv_record(&["a,b", "say \"hi\"", "two\nlines"]),
            "\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\"\n"
        );
    }

    #[test]
    fn reads_back_as_written() {
        let cells = ["x,y", "\"q\"", " padded ", "ünï"];
        let line = csv_record(&cells);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(line.as_bytes());
        let record = reader.records().next().unwrap().unwrap();
        assert_eq!(record.iter().collect::<Vec<_>>(), cells);
    }
}
