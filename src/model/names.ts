// Kubernetes' names for a service port and an endpoint, as kube-proxy prints them (and hashes them into its chain
// names, kubeproxy/names.ts). Shared by every layer that shows or keys on them.

/** proxy.ServicePortName.String(): `ns/name`, or `ns/name:port` when the port has a name. */
export function servicePortName(namespace: string, name: string, port: string): string {
  return port === '' ? `${namespace}/${name}` : `${namespace}/${name}:${port}`
}

/** proxy.BaseEndpointInfo.String(): net.JoinHostPort(ip, port). */
export function endpointString(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`
}
