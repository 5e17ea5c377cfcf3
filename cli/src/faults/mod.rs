//! Fault schedules for `caplab workload --cluster`: [`schedule`] parses them from the
//! command line and YAML files, [`inject`] runs them by editing the RegisterCluster's
//! `spec.faults`.

pub mod inject;
pub mod schedule;
