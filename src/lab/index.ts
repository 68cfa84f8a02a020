// The lab as a library: what the CLI, `npm start`, tests and benchmarks call.
export { labUp, agentConfig, DEFAULT_LAB_NAME, type LabUpOptions } from './up'
export { labDown, knownLabs, type LabDownResult } from './down'
export { labExec, labExecInteractive, execArgv, type ExecTarget, type LabExecOptions } from './exec'
export { labStatus, statusOf, formatStatus, type LabStatus } from './status'
export { loadLabState, listLabs, resolveLabName, labDir, labsRoot, LabError, type LabState } from './state'
export { compileLab, formatProblem, LabManifestError, type LabPlan } from './compile'
export { LAB, DATAPLANES, type Dataplane } from './plan'
export { parseConnectFlag, checkLabAgentSettings, type LabAgentSettings } from './settings'
export { labRestartAgent, type RestartResult } from './restart'
export {
  openLab,
  labApply,
  labDelete,
  labScale,
  labSetReady,
  planApply,
  planDelete,
  planScale,
  planSetReady,
  commit,
  parseObjectRef,
  refsOf,
  loadManifestFiles,
  type LabSession,
  type LabChange,
  type ObjectRefArg,
} from './apply'
