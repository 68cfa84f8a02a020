// Reads a kube-proxy ruleset (iptables-save or nft text) into its semantic model (parse-model.ts).
import type { Family } from '../model/cluster'
import { RulesetParseError, type RuleMode, type RuleModel } from './parse-model'
import { parseIptablesSave } from './parse-iptables'
import { parseNftRuleset } from './parse-nft'

/** Which kind of ruleset this is: nft when it has a kube-proxy table, iptables when it has `*nat`/`*filter`. */
function detectRuleMode(text: string): RuleMode | undefined {
  if (/^\s*table\s+ip6?\s+kube-proxy\s*\{/m.test(text)) return 'nft'
  if (/^\*(nat|filter)\s*$/m.test(text)) return 'iptables'
  return undefined
}

/**
 * Reads `iptables-save` / `ip6tables-save` output (nat and filter tables) or `nft list ruleset` / `nft list table`
 * output (table ip|ip6 kube-proxy). `family` picks the nft table when both are listed (default: ip, or ip6 when it is
 * the only one) and is otherwise taken from the addresses.
 */
export function parseRuleset(text: string, opts: { readonly mode?: RuleMode; readonly family?: Family } = {}): RuleModel {
  const mode = opts.mode ?? detectRuleMode(text)
  if (mode === undefined)
    throw new RulesetParseError(0, 'no kube-proxy rules found: expected iptables-save output (*nat, *filter) or an nft ruleset with table ip/ip6 kube-proxy')
  return mode === 'nft' ? parseNftRuleset(text, opts.family) : parseIptablesSave(text, opts.family)
}
