// A RunConfig back in kube-proxy's shape: the KubeProxyConfiguration /configz serves and --write-config-to writes,
// with tundra's own settings under `tundra:` (the same section --config reads), so the output reads back as input.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { KUBE_PROXY_API_VERSION, KUBE_PROXY_KIND, type RunConfig } from './kpconfig'
import { formatGoDuration } from './goduration'

const dur = (seconds: number): string => formatGoDuration(seconds)

/** The KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1) tundra runs with, defaults filled in. */
export function kubeProxyConfigurationOf(cfg: RunConfig): Record<string, unknown> {
  const mode = cfg.mode === '' ? 'iptables' : cfg.mode
  const proxySection = {
    masqueradeAll: cfg.masqueradeAll,
    masqueradeBit: cfg.masqueradeBit,
    syncPeriod: dur(cfg.syncPeriod),
    minSyncPeriod: dur(cfg.minSyncPeriod),
  }
  const t = cfg.tundra
  return {
    apiVersion: KUBE_PROXY_API_VERSION,
    kind: KUBE_PROXY_KIND,
    bindAddress: cfg.bindAddress,
    bindAddressHardFail: cfg.bindAddressHardFail,
    clientConnection: { kubeconfig: cfg.kubeconfig },
    clusterCIDR: cfg.clusterCIDRs.join(','),
    configSyncPeriod: dur(cfg.configSyncPeriod),
    conntrack: {
      maxPerCore: cfg.conntrack.maxPerCore,
      min: cfg.conntrack.min,
      tcpBeLiberal: cfg.conntrack.tcpBeLiberal,
      tcpCloseWaitTimeout: dur(cfg.conntrack.tcpCloseWaitTimeout),
      tcpEstablishedTimeout: dur(cfg.conntrack.tcpEstablishedTimeout),
      udpStreamTimeout: dur(cfg.conntrack.udpStreamTimeout),
      udpTimeout: dur(cfg.conntrack.udpTimeout),
    },
    detectLocalMode: cfg.detectLocalMode,
    healthzBindAddress: cfg.healthzBindAddress,
    hostnameOverride: cfg.hostnameOverride,
    iptables: { ...proxySection, localhostNodePorts: cfg.localhostNodePorts },
    ipvs: {
      syncPeriod: dur(cfg.syncPeriod),
      minSyncPeriod: dur(cfg.minSyncPeriod),
      scheduler: cfg.ipvs.scheduler,
      excludeCIDRs: cfg.ipvs.excludeCIDRs,
      tcpTimeout: dur(cfg.ipvs.tcpTimeout),
      tcpFinTimeout: dur(cfg.ipvs.tcpFinTimeout),
      udpTimeout: dur(cfg.ipvs.udpTimeout),
    },
    logging: { format: cfg.logging.format, verbosity: cfg.logging.verbosity },
    metricsBindAddress: cfg.metricsBindAddress,
    mode,
    nftables: proxySection,
    nodePortAddresses: cfg.nodePortAddresses,
    ...(cfg.oomScoreAdj !== undefined ? { oomScoreAdj: cfg.oomScoreAdj } : {}),
    tundra: {
      tun: t.tun,
      dns: t.dns,
      lb: t.lb,
      scheduler: t.scheduler,
      icmp: t.icmp,
      snapshot: t.snapshot,
      ...connectShape(t),
      serviceCIDR: t.serviceCIDRs.join(','),
      uplink: t.uplink,
      control: t.control,
    },
  }
}

/** The connect-tracking sections the configuration set (unset ones keep their defaults), durations as Go durations. */
function connectShape(t: RunConfig['tundra']): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  const f = t.failover
  if (f !== undefined) out['failover'] = { ...f, ...(f.synTimeout !== undefined ? { synTimeout: dur(f.synTimeout) } : {}) }
  if (t.outlierEjection !== undefined) {
    const o = t.outlierEjection
    out['outlierEjection'] = {
      ...o,
      ...(o.baseEjectionTime !== undefined ? { baseEjectionTime: dur(o.baseEjectionTime) } : {}),
      ...(o.maxEjectionTime !== undefined ? { maxEjectionTime: dur(o.maxEjectionTime) } : {}),
    }
  }
  if (t.signals !== undefined) out['signals'] = t.signals
  return out
}

/** tundra's version, from its package.json (found from this file in src/ or dist/src/). */
export function tundraVersion(): string {
  for (const up of ['../..', '../../..']) {
    try {
      const pkg = JSON.parse(readFileSync(join(__dirname, up, 'package.json'), 'utf8')) as { name?: string; version?: string }
      if (pkg.name === 'tundra' && typeof pkg.version === 'string') return pkg.version
    } catch {
      /* try the next level */
    }
  }
  return 'unknown'
}
