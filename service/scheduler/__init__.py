"""The scheduler: one `DeviceScheduler` per device decides which model's batch runs next and how
large, from each model variant's `LatencyModel` and the requests' deadlines."""
