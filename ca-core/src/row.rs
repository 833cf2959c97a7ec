//! Rows read by column name: `row!` declares a struct and reads it from an `AnyRow` field by
//! field, each from the column of the same name (`row.try_get("field")`). A SELECT whose
//! columns are reordered still fills every field from its own column; one that lacks a column
//! fails with `ColumnNotFound` instead of reading another field's value (STYLE.md rule 17).
//!
//! This does what `#[derive(sqlx::FromRow)]` does for our rows. That derive needs sqlx's
//! `derive` feature, which (through sqlx's `sqlx-macros?/sqlite` and `sqlx-macros?/postgres`
//! feature forwarding) compiles a second copy of both drivers, sqlx-core and SQLite's C for the
//! proc-macro host: about 105 s more CPU per clean build on the 2-core CI machine, for no other
//! use. Name an expression's column with `AS`; select a boolean expression as
//! `CAST(CASE WHEN .. THEN 1 ELSE 0 END AS BIGINT)` (PostgreSQL gives a bool, SQLite an
//! integer) and read it as `i64`.
//!
//! ```ignore
//! row! {
//!     /// An outlet as listed.
//!     struct OutletRow {
//!         id: String,
//!         name_en: String,
//!     }
//! }
//! let rows = sqlx::query_as::<_, OutletRow>("SELECT id, name_en FROM outlets")
//!     .fetch_all(pool)
//!     .await?;
//! ```

/// Declares a struct read from an `AnyRow` by column name (see the module doc).
macro_rules! row {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[$field_meta:meta])*
                $field_vis:vis $field:ident : $ty:ty
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $(
                $(#[$field_meta])*
                $field_vis $field: $ty,
            )*
        }

        impl<'r> ::sqlx::FromRow<'r, ::sqlx::any::AnyRow> for $name {
            fn from_row(
                row: &'r ::sqlx::any::AnyRow,
            ) -> ::std::result::Result<Self, ::sqlx::Error> {
                Ok(Self {
                    $( $field: ::sqlx::Row::try_get(row, stringify!($field))?, )*
                })
            }
        }
    };
}
pub(crate) use row;

#[cfg(test)]
mod tests {
    // `row!` is in scope here textually (macro_rules), like in the parent module.
    row! {
        #[derive(Debug, PartialEq, Eq)]
        struct Pair {
            /// First.
            a: i64,
            b: Option<String>,
        }
    }

    async fn pool() -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap()
    }

    /// A reordered SELECT reads each field from its own column; a missing column is an error,
    /// never another column's value.
    #[tokio::test]
    async fn fields_are_read_by_column_name() {
        let pool = pool().await;
        let want = Pair {
            a: 1,
            b: Some("x".into()),
        };
        for sql in ["SELECT 1 AS a, 'x' AS b", "SELECT 'x' AS b, 1 AS a"] {
            let got = sqlx::query_as::<_, Pair>(sql)
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(got, want, "{sql}");
        }
        let missing = sqlx::query_as::<_, Pair>("SELECT 1 AS a, 'x' AS c")
            .fetch_one(&pool)
            .await
            .unwrap_err();
        assert!(
            matches!(missing, sqlx::Error::ColumnNotFound(ref c) if c == "b"),
            "{missing:?}"
        );
        // A column of the wrong type is an error too, not a conversion.
        let wrong = sqlx::query_as::<_, Pair>("SELECT 'one' AS a, 'x' AS b")
            .fetch_one(&pool)
            .await;
        assert!(wrong.is_err(), "{wrong:?}");
    }
}
