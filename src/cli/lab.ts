// `tundra lab up|exec|status|apply|delete|scale|set-ready|down`: a cluster of network namespaces to run tundra (or the kernel baseline) on.
import { Command, Option } from 'commander'
import {
  DATAPLANES,
  DEFAULT_LAB_NAME,
  formatStatus,
  labRestartAgent,
  labDown,
  labExecInteractive,
  labStatus,
  labUp,
  LabError,
  parseConnectFlag,
  type Dataplane,
  type LabAgentSettings,
  type ExecTarget,
} from '../lab/index'
import { labApply, labDelete, labScale, labSetReady, loadManifestFiles, openLab, parseObjectRef, refsOf, type LabSession } from '../lab/apply'

const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value]

function positiveInt(value: string): number {
  if (!/^\d+$/.test(value)) throw new LabError(`not a number: ${value}`)
  return Number(value)
}

export function registerLab(program: Command): void {
  const lab = program.command('lab').description('build, use and remove a cluster of network namespaces with tundra on every node')

  lab
    .command('up')
    .description('build the lab, start tundra on every node; returns when all pods are ready')
    .addOption(new Option('-f, --filename <file|dir>', 'manifests (YAML/JSON, multi-document; repeat for more)').argParser(collect).makeOptionMandatory())
    .option('--name <lab>', 'lab name', DEFAULT_LAB_NAME)
    .option('--nodes <n>', 'number of nodes', positiveInt, 1)
    .addOption(new Option('--dataplane <kind>', 'what handles services and routing').choices(DATAPLANES).default('tundra'))
    .addOption(new Option('--iptables-backend <kind>', 'with --dataplane iptables: which iptables').choices(['nft', 'legacy']).default('nft'))
    .option('--timeout <seconds>', 'how long pods and agents may take to get ready', positiveInt, 60)
    .option('--keep-on-failure', 'leave a lab that failed to come up in place, for a look')
    .option('--failover [settings]', 'connect-time failover in every agent: on (bare flag), off, or fields like synTimeout=300ms,maxRetries=2,pool=N')
    .option(
      '--outlier-ejection [settings]',
      'passive outlier ejection in every agent: on (bare flag), off, or fields like consecutiveFailures=3,baseEjectionTime=30s,maxEjectionTime=300s,maxEjectionPercent=50',
    )
    .action(
      async (o: {
        filename: string[]
        name: string
        nodes: number
        dataplane: Dataplane
        iptablesBackend: 'nft' | 'legacy'
        timeout: number
        keepOnFailure?: boolean
        failover?: string | true
        outlierEjection?: string | true
      }) => {
        const agentSettings: LabAgentSettings = {
          ...(o.failover === undefined ? {} : { failover: parseConnectFlag('failover', o.failover) }),
          ...(o.outlierEjection === undefined ? {} : { outlierEjection: parseConnectFlag('outlierEjection', o.outlierEjection) }),
        }
        const abort = new AbortController()
        const onSignal = (): void => {
          process.stderr.write('[lab] interrupted: cleaning up\n')
          abort.abort()
        }
        process.on('SIGINT', onSignal)
        process.on('SIGTERM', onSignal)
        try {
          await labUp({
            files: o.filename,
            name: o.name,
            nodes: o.nodes,
            dataplane: o.dataplane,
            iptablesBackend: o.iptablesBackend,
            readyTimeoutMs: o.timeout * 1000,
            keepOnFailure: o.keepOnFailure === true,
            signal: abort.signal,
            ...(Object.keys(agentSettings).length === 0 ? {} : { agentSettings }),
          })
        } catch (err) {
          if (!abort.signal.aborted) throw err
          process.stderr.write('tundra: lab up interrupted; what it made is removed\n')
          process.exit(130)
        } finally {
          process.off('SIGINT', onSignal)
          process.off('SIGTERM', onSignal)
        }
        process.stdout.write(formatStatus(labStatus(o.name)))
      },
    )

  lab
    .command('restart')
    .description("restart a node's tundra (SIGTERM, or SIGKILL with --kill) with the same command; conntrack state is kept across it")
    .option('--name <lab>', 'lab name (may be left out when one lab is up)')
    .option('--node <node>', 'node (default: the first)')
    .option('--kill', 'SIGKILL instead of a graceful stop (loses at most the last snapshot interval)')
    .action(async (o: { name?: string; node?: string; kill?: boolean }) => {
      const r = await labRestartAgent({ ...(o.name ? { name: o.name } : {}), ...(o.node ? { node: o.node } : {}), kill: o.kill === true })
      process.stdout.write(`tundra on ${r.node} restarted: pid ${r.oldPid} → ${r.pid}, ${r.downMs} ms without an agent\n`)
    })

  lab
    .command('exec')
    .description('run a command in a pod (its network, resolv.conf, hostname), on a node, or on the outside host')
    .usage('[--name LAB] (<pod> [-n <namespace>] | --node <node> | --external) -- <cmd…>')
    .argument('[args...]', '<pod> -- <cmd…>, or -- <cmd…> with --node/--external')
    .option('--name <lab>', 'lab name (may be left out when one lab is up)')
    .option('-n, --namespace <ns>', "the pod's namespace", 'default')
    .option('--node <node>', "run in this node's namespace")
    .option('--external', 'run on the host outside the cluster (on the node network)')
    .action(async (args: string[], o: { name?: string; namespace: string; node?: string; external?: boolean }, cmd: Command) => {
      // commander drops `--` itself: find it in the root's raw argv (a runtime field) to tell the pod from the command
      let root: Command = cmd
      while (root.parent) root = root.parent
      const raw = (root as unknown as { rawArgs?: string[] }).rawArgs ?? process.argv
      const dd = raw.indexOf('--')
      if (dd < 0) throw new LabError('put the command after --, e.g. `tundra lab exec pod-client -- curl -s http://…`')
      const command = raw.slice(dd + 1)
      const before = args.slice(0, args.length - command.length)
      let target: ExecTarget
      if (o.node !== undefined || o.external === true) {
        if (o.node !== undefined && o.external === true) throw new LabError('give --node or --external, not both')
        if (before.length > 0) throw new LabError(`unexpected ${before.join(' ')} before --: a pod name goes without --node/--external`)
        target = o.node !== undefined ? { node: o.node } : { external: true }
      } else {
        if (before.length !== 1) throw new LabError('give exactly one pod name before -- (or --node / --external)')
        target = { pod: before[0]!, namespace: o.namespace }
      }
      process.exitCode = await labExecInteractive({ ...(o.name === undefined ? {} : { name: o.name }), target, cmd: command })
    })

  lab
    .command('status')
    .description('nodes, pods, services and EndpointSlices, like kubectl get … -o wide')
    .option('--name <lab>', 'lab name (may be left out when one lab is up)')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['wide', 'json']).default('wide'))
    .action((o: { name?: string; output: 'wide' | 'json' }) => {
      const st = labStatus(o.name)
      process.stdout.write(o.output === 'json' ? JSON.stringify(st, null, 2) + '\n' : formatStatus(st))
    })

  const session = (name: string | undefined): LabSession => openLab(name, { log: line => process.stderr.write(`${line}\n`) })
  const print = (lines: readonly string[]): void => {
    for (const l of lines) process.stdout.write(`${l}\n`)
  }

  lab
    .command('apply')
    .description('create or update Services, EndpointSlices, Deployments and Pods in a running lab, like kubectl apply')
    .addOption(new Option('-f, --filename <file|dir>', 'manifests (YAML/JSON, multi-document; repeat for more)').argParser(collect).makeOptionMandatory())
    .option('--name <lab>', 'lab name (may be left out when one lab is up)')
    .action(async (o: { filename: string[]; name?: string }) => {
      const loaded = loadManifestFiles(o.filename)
      for (const w of loaded.warnings) process.stderr.write(`[lab] warning: ${w}\n`)
      const s = session(o.name)
      print(await labApply(s, loaded.objects))
    })

  lab
    .command('delete')
    .description('delete objects from a running lab: -f manifests, or TYPE/NAME (svc, deploy, pod, endpointslice, ns)')
    .argument('[objects...]', 'TYPE/NAME, e.g. svc/web deploy/web pod/client')
    .option('-f, --filename <file|dir>', 'delete the objects these manifests name (repeat for more)', collect)
    .option('-n, --namespace <ns>', 'namespace of TYPE/NAME objects', 'default')
    .option('--name <lab>', 'lab name (may be left out when one lab is up)')
    .action(async (args: string[], o: { filename?: string[]; namespace: string; name?: string }) => {
      const refs = args.map(a => parseObjectRef(a, o.namespace))
      if (o.filename) refs.push(...refsOf(loadManifestFiles(o.filename).objects))
      if (refs.length === 0) throw new LabError('say what to delete: -f manifests, or TYPE/NAME')
      print(await labDelete(session(o.name), refs))
    })

  lab
    .command('scale')
    .description('set the number of pods of a Deployment in a running lab')
    .argument('<deployment>', 'deploy/NAME')
    .requiredOption('--replicas <n>', 'the new number of pods', positiveInt)
    .option('-n, --namespace <ns>', 'namespace', 'default')
    .option('--name <lab>', 'lab name (may be left out when one lab is up)')
    .action(async (target: string, o: { replicas: number; namespace: string; name?: string }) => {
      const r = parseObjectRef(target, o.namespace)
      if (r.kind !== 'Deployment') throw new LabError(`only Deployments scale here (deploy/NAME), not ${target}`)
      print(await labScale(session(o.name), r.namespace, r.name, o.replicas))
    })

  lab
    .command('set-ready')
    .description("set a pod's Ready condition as a passing or failing readiness probe would (its endpoints follow)")
    .argument('<pod>', 'pod/NAME')
    .requiredOption('--ready <bool>', 'true or false', (v: string) => {
      if (v !== 'true' && v !== 'false') throw new LabError(`--ready must be true or false, not ${v}`)
      return v === 'true'
    })
    .option('-n, --namespace <ns>', 'namespace', 'default')
    .option('--name <lab>', 'lab name (may be left out when one lab is up)')
    .action(async (target: string, o: { ready: boolean; namespace: string; name?: string }) => {
      const r = parseObjectRef(target.includes('/') ? target : `pod/${target}`, o.namespace)
      if (r.kind !== 'Pod') throw new LabError(`set-ready takes a pod (pod/NAME), not ${target}`)
      print(await labSetReady(session(o.name), r.namespace, r.name, o.ready))
    })

  lab
    .command('down')
    .description('remove everything the lab made (also after a crash)')
    .option('--name <lab>', 'lab name (may be left out when one lab is up)')
    .action(async (o: { name?: string }) => {
      const r = await labDown(o.name)
      if (!r.found) throw new LabError(o.name === undefined ? 'no lab is up' : `no lab named ${JSON.stringify(o.name)} is up`)
    })
}
