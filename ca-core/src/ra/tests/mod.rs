//! The RA's tests that cross capabilities (each capability's own unit tests sit beside it).

mod bulk;
mod journey;
mod review_fixes;
