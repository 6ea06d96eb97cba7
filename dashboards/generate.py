#!/usr/bin/env python3
"""Writes Vigil's Grafana dashboards (host.json, fleet.json, alerts.json,
vigil.json) beside this file.

The JSON files are committed; edit the panels here and run
`python3 dashboards/generate.py` (or `python3 dashboards/generate.py DIR` to
write them elsewhere). `tests/tests/dashboards.rs` checks that the
committed files are well-formed for Grafana's import screen and for file
provisioning, and runs every panel and variable query against a collector fed
by a real agent, and through Prometheus 2.42 scraping that collector.
"""

import json
import os

SCHEMA_VERSION = 39  # Grafana 11.0; Grafana 10.4 imports it as well.
DS = {"type": "prometheus", "uid": "${datasource}"}
HOST = 'instance="$instance",job=~"$job"'


def datasource_variable():
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {"text": "${DS_VIGIL}", "value": "${DS_VIGIL}"},
        "hide": 0,
        "refresh": 1,
        "options": [],
    }


def query_variable(name, label, query, multi=False, include_all=False):
    v = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-variable"},
        "refresh": 2,
        "sort": 1,
        "hide": 0,
        "multi": multi,
        "includeAll": include_all,
        "current": {},
        "options": [],
    }
    if include_all:
        v["allValue"] = ".+"
    return v


class Layout:
    """Places panels left to right, two or four to a row."""

    def __init__(self):
        self.panels = []
        self.x = 0
        self.y = 0
        self.row_height = 0

    def add(self, panel, w, h):
        if self.x + w > 24:
            self.x = 0
            self.y += self.row_height
            self.row_height = 0
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_height = max(self.row_height, h)
        self.panels.append(panel)

    def row(self, title):
        if self.x:
            self.x = 0
            self.y += self.row_height
            self.row_height = 0
        self.panels.append(
            {
                "id": len(self.panels) + 1,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1},
                "panels": [],
            }
        )
        self.y += 1


def targets(queries):
    out = []
    for i, (expr, legend) in enumerate(queries):
        out.append(
            {
                "refId": chr(ord("A") + i),
                "datasource": DS,
                "expr": expr,
                "legendFormat": legend,
                "range": True,
            }
        )
    return out


def timeseries(title, description, queries, unit="short", max_value=None):
    defaults = {"unit": unit, "custom": {"fillOpacity": 10, "lineWidth": 1}}
    if max_value is not None:
        defaults["max"] = max_value
        defaults["min"] = 0
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets(queries),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(title, description, expr, unit="short", legend=""):
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets([(expr, legend)]),
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
        },
    }


def table(title, description, expr, unit="short"):
    panel = stat(title, description, expr, unit, "{{instance}}")
    panel["type"] = "bargauge"
    panel["targets"][0]["instant"] = True
    panel["targets"][0]["range"] = False
    panel["options"] = {
        "displayMode": "gradient",
        "orientation": "horizontal",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
    }
    return panel


def dashboard(uid, title, description, variables, layout, tags):
    return {
        "__inputs": [
            {
                "name": "DS_VIGIL",
                "label": "Vigil",
                "description": "The Vigil collector (http://collector:9470), or a Prometheus server that scrapes it",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.4.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""},
            {"type": "panel", "id": "stat", "name": "Stat", "version": ""},
            {"type": "panel", "id": "bargauge", "name": "Bar gauge", "version": ""},
        ],
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["vigil"] + tags,
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "templating": {"list": [datasource_variable()] + variables},
        "annotations": {"list": []},
        "links": [],
        "panels": layout.panels,
    }


def host():
    l = Layout()
    l.row("Overview")
    l.add(stat("Uptime", "Time since the host booted.", f"time() - node_boot_time_seconds{{{HOST}}}", "s"), 6, 4)
    l.add(stat("CPUs", "Logical CPUs.", f"count(count by (cpu) (node_cpu_seconds_total{{{HOST}}}))"), 6, 4)
    l.add(stat("Memory", "Total memory.", f"node_memory_MemTotal_bytes{{{HOST}}}", "bytes"), 6, 4)
    l.add(stat("Load (1m) per CPU", "1-minute load average divided by the CPUs.",
               f"node_load1{{{HOST}}} / scalar(count(count by (cpu) (node_cpu_seconds_total{{{HOST}}})))", "percentunit"), 6, 4)
    l.row("CPU")
    l.add(timeseries(
        "CPU busy: average and busiest seconds",
        "The rate average over the interval beside the exact median, 99th percentile and maximum of the per-second samples of each flush window: a one-second spike shows in the maximum even when the average is low.",
        [
            (f'1 - avg(rate(node_cpu_seconds_total{{{HOST},mode="idle"}}[$__rate_interval]))', "average (rate)"),
            (f'avg_over_time(vigil_cpu_busy_ratio_window{{{HOST},stat="p50"}}[$__rate_interval])', "per-second p50"),
            (f'max_over_time(vigil_cpu_busy_ratio_window{{{HOST},stat="p99"}}[$__rate_interval])', "per-second p99"),
            (f'max_over_time(vigil_cpu_busy_ratio_window{{{HOST},stat="max"}}[$__rate_interval])', "busiest second"),
        ],
        "percentunit", 1,
    ), 12, 8)
    l.add(timeseries(
        "CPU by mode",
        "CPU seconds per second by mode, over all CPUs, idle left out.",
        [(f'sum by (mode) (rate(node_cpu_seconds_total{{{HOST},mode!="idle"}}[$__rate_interval]))', "{{mode}}")],
    ), 12, 8)
    l.add(timeseries(
        "Load average",
        "Run-queue length averaged over 1, 5 and 15 minutes.",
        [
            (f"node_load1{{{HOST}}}", "1m"),
            (f"node_load5{{{HOST}}}", "5m"),
            (f"node_load15{{{HOST}}}", "15m"),
        ],
    ), 12, 8)
    l.add(timeseries(
        "Context switches and interrupts",
        "Per second.",
        [
            (f"rate(node_context_switches_total{{{HOST}}}[$__rate_interval])", "context switches"),
            (f"rate(node_intr_total{{{HOST}}}[$__rate_interval])", "interrupts"),
        ],
        "ops",
    ), 12, 8)
    l.row("Memory")
    l.add(timeseries(
        "Memory used: average and busiest seconds",
        "1 - MemAvailable / MemTotal, beside the per-second maximum of each flush window.",
        [
            (f"1 - node_memory_MemAvailable_bytes{{{HOST}}} / node_memory_MemTotal_bytes{{{HOST}}}", "used"),
            (f'max_over_time(vigil_memory_used_ratio_window{{{HOST},stat="p99"}}[$__rate_interval])', "per-second p99"),
            (f'max_over_time(vigil_memory_used_ratio_window{{{HOST},stat="max"}}[$__rate_interval])', "highest second"),
        ],
        "percentunit", 1,
    ), 12, 8)
    l.add(timeseries(
        "Memory",
        "Bytes.",
        [
            (f"node_memory_MemTotal_bytes{{{HOST}}}", "total"),
            (f"node_memory_MemAvailable_bytes{{{HOST}}}", "available"),
            (f"node_memory_Cached_bytes{{{HOST}}}", "cached"),
            (f"node_memory_Buffers_bytes{{{HOST}}}", "buffers"),
            (f"node_memory_SwapTotal_bytes{{{HOST}}} - node_memory_SwapFree_bytes{{{HOST}}}", "swap used"),
        ],
        "bytes",
    ), 12, 8)
    l.row("Disks")
    l.add(timeseries(
        "Disk busy: average and busiest seconds",
        "Share of time each device was busy: rate average, and the busiest second of each flush window.",
        [
            (f"rate(node_disk_io_time_seconds_total{{{HOST}}}[$__rate_interval])", "{{device}} average"),
            (f'max_over_time(vigil_disk_busy_ratio_window{{{HOST},stat="max"}}[$__rate_interval])', "{{device}} busiest second"),
        ],
        "percentunit", 1,
    ), 12, 8)
    l.add(timeseries(
        "Disk throughput",
        "Bytes read (positive) and written (negative) per second.",
        [
            (f"rate(node_disk_read_bytes_total{{{HOST}}}[$__rate_interval])", "{{device}} read"),
            (f"-rate(node_disk_written_bytes_total{{{HOST}}}[$__rate_interval])", "{{device}} written"),
        ],
        "Bps",
    ), 12, 8)
    l.add(timeseries(
        "Disk operations",
        "Reads and writes completed per second.",
        [
            (f"rate(node_disk_reads_completed_total{{{HOST}}}[$__rate_interval])", "{{device}} reads"),
            (f"rate(node_disk_writes_completed_total{{{HOST}}}[$__rate_interval])", "{{device}} writes"),
        ],
        "iops",
    ), 12, 8)
    l.add(timeseries(
        "Filesystems used",
        "Share of each filesystem's space in use (as df, reserved blocks counted as used).",
        [(f"1 - node_filesystem_avail_bytes{{{HOST}}} / node_filesystem_size_bytes{{{HOST}}}", "{{mountpoint}}")],
        "percentunit", 1,
    ), 12, 8)
    l.row("Network")
    l.add(timeseries(
        "Network traffic: average and busiest seconds",
        "Bytes per second received and sent, loopback left out: rate average, and the busiest second of each flush window.",
        [
            (f'rate(node_network_receive_bytes_total{{{HOST},device!="lo"}}[$__rate_interval])', "{{device}} in"),
            (f'rate(node_network_transmit_bytes_total{{{HOST},device!="lo"}}[$__rate_interval])', "{{device}} out"),
            (f'max_over_time(vigil_network_receive_bytes_per_second_window{{{HOST},device!="lo",stat="max"}}[$__rate_interval])', "{{device}} in, busiest second"),
            (f'max_over_time(vigil_network_transmit_bytes_per_second_window{{{HOST},device!="lo",stat="max"}}[$__rate_interval])', "{{device}} out, busiest second"),
        ],
        "Bps",
    ), 12, 8)
    l.add(timeseries(
        "Network errors and drops",
        "Per second, both directions.",
        [
            (f"rate(node_network_receive_errs_total{{{HOST}}}[$__rate_interval]) + rate(node_network_transmit_errs_total{{{HOST}}}[$__rate_interval])", "{{device}} errors"),
            (f"rate(node_network_receive_drop_total{{{HOST}}}[$__rate_interval]) + rate(node_network_transmit_drop_total{{{HOST}}}[$__rate_interval])", "{{device}} drops"),
        ],
        "pps",
    ), 12, 8)
    return dashboard(
        "vigil-host", "Vigil / Host",
        "One host: CPU, memory, load, disks, network and filesystems, with the per-second spikes that rate averages hide.",
        [
            query_variable("job", "Job", "label_values(node_uname_info, job)", multi=True, include_all=True),
            query_variable("instance", "Host", 'label_values(node_uname_info{job=~"$job"}, instance)'),
        ],
        l, ["host"],
    )


FLEET = 'job=~"$job"'


def fleet():
    l = Layout()
    l.row("At a glance")
    l.add(stat("Hosts reporting", "Agents whose last push is recent.", f"count(vigil_agent_build_info{{{FLEET}}})"), 6, 4)
    l.add(stat("Hosts down", "Hosts the built-in HostDown alert says are down (0 when none).",
               'count(ALERTS{alertname="HostDown",alertstate="firing"}) or vector(0)'), 6, 4)
    l.add(stat("Fleet CPU busy", "Share of all CPUs of the fleet not idle.",
               f'1 - sum(rate(node_cpu_seconds_total{{{FLEET},mode="idle"}}[$__rate_interval])) / count(node_cpu_seconds_total{{{FLEET},mode="idle"}})', "percentunit"), 6, 4)
    l.add(stat("Fleet memory used", "Share of all memory of the fleet in use.",
               f"1 - sum(node_memory_MemAvailable_bytes{{{FLEET}}}) / sum(node_memory_MemTotal_bytes{{{FLEET}}})", "percentunit"), 6, 4)
    l.row("Top hosts")
    l.add(table("Top 10 hosts by CPU busy", "Rate average over the interval.",
                f'topk(10, 1 - avg by (instance) (rate(node_cpu_seconds_total{{{FLEET},mode="idle"}}[$__rate_interval])))', "percentunit"), 8, 8)
    l.add(table("Top 10 hosts by memory used", "1 - MemAvailable / MemTotal.",
                f"topk(10, 1 - node_memory_MemAvailable_bytes{{{FLEET}}} / node_memory_MemTotal_bytes{{{FLEET}}})", "percentunit"), 8, 8)
    l.add(table("Top 10 hosts by fullest filesystem", "The fullest filesystem of each host.",
                f"topk(10, max by (instance) (1 - node_filesystem_avail_bytes{{{FLEET}}} / node_filesystem_size_bytes{{{FLEET}}}))", "percentunit"), 8, 8)
    l.row("Fleet-wide percentiles")
    l.add(timeseries(
        "Fleet CPU busy: percentiles of every host's seconds",
        "histogram_quantile over the sum of every host's per-second histograms: the exact bucket counts of all seconds of all hosts (for the exact value, see /api/v1/vigil/quantile).",
        [
            (f"histogram_quantile(0.5, sum by (le) (rate(vigil_cpu_busy_ratio_bucket{{{FLEET}}}[$__rate_interval])))", "p50"),
            (f"histogram_quantile(0.99, sum by (le) (rate(vigil_cpu_busy_ratio_bucket{{{FLEET}}}[$__rate_interval])))", "p99"),
            (f'max(max_over_time(vigil_cpu_busy_ratio_window{{{FLEET},stat="max"}}[$__rate_interval]))', "busiest second of any host"),
        ],
        "percentunit", 1,
    ), 12, 8)
    l.add(timeseries(
        "Fleet memory used: percentiles of every host's seconds",
        "As for CPU.",
        [
            (f"histogram_quantile(0.5, sum by (le) (rate(vigil_memory_used_ratio_bucket{{{FLEET}}}[$__rate_interval])))", "p50"),
            (f"histogram_quantile(0.99, sum by (le) (rate(vigil_memory_used_ratio_bucket{{{FLEET}}}[$__rate_interval])))", "p99"),
            (f'max(max_over_time(vigil_memory_used_ratio_window{{{FLEET},stat="max"}}[$__rate_interval]))', "highest second of any host"),
        ],
        "percentunit", 1,
    ), 12, 8)
    l.add(timeseries(
        "CPU busy by host",
        "Rate average per host.",
        [(f'1 - avg by (instance) (rate(node_cpu_seconds_total{{{FLEET},mode="idle"}}[$__rate_interval]))', "{{instance}}")],
        "percentunit", 1,
    ), 12, 8)
    l.add(timeseries(
        "Network traffic by host",
        "Bytes per second received plus sent, loopback left out.",
        [(f'sum by (instance) (rate(node_network_receive_bytes_total{{{FLEET},device!="lo"}}[$__rate_interval]) + rate(node_network_transmit_bytes_total{{{FLEET},device!="lo"}}[$__rate_interval]))', "{{instance}}")],
        "Bps",
    ), 12, 8)
    return dashboard(
        "vigil-fleet", "Vigil / Fleet",
        "Every host at a glance: hosts down, top hosts by CPU, memory and disk, fleet-wide percentiles of per-second samples.",
        [query_variable("job", "Job", "label_values(node_uname_info, job)", multi=True, include_all=True)],
        l, ["fleet"],
    )


def alerts():
    l = Layout()
    l.row("Alerts")
    l.add(stat("Firing", "Alerts firing now.", 'count(ALERTS{alertstate="firing"}) or vector(0)'), 6, 4)
    l.add(stat("Pending", "Alerts whose condition holds, waiting for their `for`.", 'count(ALERTS{alertstate="pending"}) or vector(0)'), 6, 4)
    l.add(stat("Notifications sent (1h)", "Notifications receivers acknowledged with a 2xx in the last hour.",
               "sum(increase(vigil_collector_notifications_sent_total[1h])) or vector(0)"), 6, 4)
    l.add(stat("Notifications failed (1h)", "Notification attempts that failed in the last hour.",
               "sum(increase(vigil_collector_notifications_failed_total[1h])) or vector(0)"), 6, 4)
    l.add(timeseries(
        "Alerts by name and state",
        "From ALERTS, as Prometheus writes it.",
        [("count by (alertname, alertstate) (ALERTS)", "{{alertname}} {{alertstate}}")],
    ), 24, 8)
    l.row("Notifications")
    l.add(timeseries(
        "Notifications per receiver",
        "Per second: sent (2xx), failed attempts, retries.",
        [
            ("sum by (receiver) (rate(vigil_collector_notifications_sent_total[$__rate_interval]))", "{{receiver}} sent"),
            ("sum by (receiver) (rate(vigil_collector_notifications_failed_total[$__rate_interval]))", "{{receiver}} failed"),
            ("sum by (receiver) (rate(vigil_collector_notifications_retried_total[$__rate_interval]))", "{{receiver}} retried"),
        ],
        "ops",
    ), 12, 8)
    l.add(timeseries(
        "Notification latency",
        "From the samples that fired an alert (their agent's batch time) to the receiver's 2xx.",
        [
            ("histogram_quantile(0.5, sum by (le) (rate(vigil_collector_notification_latency_seconds_bucket[$__rate_interval])))", "p50"),
            ("histogram_quantile(0.99, sum by (le) (rate(vigil_collector_notification_latency_seconds_bucket[$__rate_interval])))", "p99"),
        ],
        "s",
    ), 12, 8)
    l.add(timeseries(
        "Outbox and open breakers",
        "Notifications waiting in the durable outbox, and receivers whose circuit breaker holds them.",
        [
            ("sum by (receiver) (vigil_collector_notification_outbox)", "{{receiver}} waiting"),
            ("sum by (receiver) (vigil_collector_notification_breaker_open)", "{{receiver}} breaker open"),
        ],
    ), 24, 8)
    return dashboard(
        "vigil-alerts", "Vigil / Alerts",
        "Firing and pending alerts, notifications sent and failed, notification latency.",
        [], l, ["alerts"],
    )


COLLECTOR = 'instance=~"$collector"'


def vigil():
    l = Layout()
    l.row("Ingest")
    l.add(timeseries(
        "Pushes",
        "Agents' batches acknowledged per second, applied or recognised as duplicates.",
        [(f"sum by (result) (rate(vigil_collector_pushes_total{{{COLLECTOR}}}[$__rate_interval]))", "{{result}}")],
        "ops",
    ), 8, 8)
    l.add(timeseries(
        "Pushes rejected by reason",
        "Per second.",
        [(f"sum by (reason) (rate(vigil_collector_pushes_rejected_total{{{COLLECTOR}}}[$__rate_interval]))", "{{reason}}")],
        "ops",
    ), 8, 8)
    l.add(timeseries(
        "Series written",
        "Series applied to the store per second, and series held.",
        [
            (f"rate(vigil_collector_series_applied_total{{{COLLECTOR}}}[$__rate_interval])", "applied per second"),
            (f"vigil_collector_series{{{COLLECTOR}}}", "held"),
        ],
    ), 8, 8)
    l.add(timeseries(
        "Write-ahead log",
        "Batches appended and syncs per second (fewer syncs than appends: group commit), and failures.",
        [
            (f"rate(vigil_collector_wal_appends_total{{{COLLECTOR}}}[$__rate_interval])", "appends"),
            (f"rate(vigil_collector_wal_syncs_total{{{COLLECTOR}}}[$__rate_interval])", "syncs"),
            (f"rate(vigil_collector_wal_failures_total{{{COLLECTOR}}}[$__rate_interval])", "failures"),
        ],
        "ops",
    ), 12, 8)
    l.add(timeseries(
        "Agents",
        "Agents that pushed recently.",
        [(f"vigil_collector_agents{{{COLLECTOR}}}", "agents")],
    ), 12, 8)
    l.row("Agents")
    l.add(timeseries(
        "Spool depth",
        "Batches each agent holds that a collector has not acknowledged yet.",
        [("vigil_agent_spool_batches", "{{instance}}")],
    ), 8, 8)
    l.add(timeseries(
        "Oldest unacknowledged batch",
        "Age of the oldest batch each agent still holds (0 when none waits).",
        [("vigil_agent_spool_oldest_unacknowledged_age_seconds", "{{instance}}")],
        "s",
    ), 8, 8)
    l.add(timeseries(
        "Agent CPU",
        "Each agent's CPU time, as a share of one core.",
        [
            ("rate(vigil_agent_cpu_seconds_total[$__rate_interval])", "{{instance}} CPU"),
        ],
        "percentunit",
    ), 8, 8)
    l.row("Rules and queries")
    l.add(timeseries(
        "Rule evaluations",
        "Group evaluations and failed rule evaluations per second.",
        [
            (f"rate(vigil_collector_rule_group_evaluations_total{{{COLLECTOR}}}[$__rate_interval])", "evaluations"),
            (f"rate(vigil_collector_rule_evaluation_failures_total{{{COLLECTOR}}}[$__rate_interval])", "failures"),
        ],
        "ops",
    ), 8, 8)
    l.add(timeseries(
        "Rules running",
        "Groups and rules loaded, and whether the last reload took every file.",
        [
            (f"vigil_collector_rules{{{COLLECTOR}}}", "rules"),
            (f"vigil_collector_rule_groups{{{COLLECTOR}}}", "groups"),
            (f"vigil_collector_rule_last_reload_successful{{{COLLECTOR}}}", "last reload successful"),
        ],
    ), 8, 8)
    l.add(timeseries(
        "Queries",
        "Query API calls answered and refused per second.",
        [
            (f"rate(vigil_collector_queries_total{{{COLLECTOR}}}[$__rate_interval])", "answered"),
            (f"sum by (reason) (rate(vigil_collector_queries_refused_total{{{COLLECTOR}}}[$__rate_interval]))", "refused: {{reason}}"),
        ],
        "ops",
    ), 8, 8)
    l.add(timeseries(
        "Notification outbox",
        "Notifications waiting per receiver.",
        [(f"sum by (receiver) (vigil_collector_notification_outbox{{{COLLECTOR}}})", "{{receiver}}")],
    ), 12, 8)
    l.add(timeseries(
        "History",
        "Samples and compressed bytes the history holds.",
        [
            (f"vigil_collector_history_samples{{{COLLECTOR}}}", "samples"),
            (f"vigil_collector_history_chunk_bytes{{{COLLECTOR}}}", "chunk bytes"),
        ],
    ), 12, 8)
    return dashboard(
        "vigil-self", "Vigil / Vigil",
        "Vigil itself: ingest rate, pushes rejected by reason, agents' spool depth and oldest unacknowledged batch, write-ahead log syncs, rule evaluations and failures, notification outbox.",
        [query_variable("collector", "Collector", "label_values(vigil_collector_build_info, instance)", multi=True, include_all=True)],
        l, ["self"],
    )


def main():
    import sys

    here = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    for name, build in [("host", host), ("fleet", fleet), ("alerts", alerts), ("vigil", vigil)]:
        with open(os.path.join(here, f"{name}.json"), "w") as f:
            json.dump(build(), f, indent=2, ensure_ascii=False)
            f.write("\n")


if __name__ == "__main__":
    main()
