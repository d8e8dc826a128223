package main

// allowed exempts one file from one rule. Every entry says why it cannot be
// fixed yet and who removes it; run fails on an entry that matches nothing,
// so an entry goes as soon as its offence does.
type allowed struct {
	Rule, File string
}

// allowlist: the offences left in internal/restore, which was being
// restructured on another branch when these rules arrived and so was not
// touched here. Whoever lands the restructuring fixes them and deletes
// the entries (the fix for each is named).
var allowlist = []allowed{
	// restorer.mapVdso finds the new [vdso] by splitting /proc/PID/maps:
	// procfs.MapsPid and Kind == procfs.KindVdso.
	{Rule: "procparse", File: "internal/restore/mem.go"},
	// vdsoHashOf finds [vdso] by splitting /proc/PID/maps and Sscanf:
	// procfs.MapsPid and Kind == procfs.KindVdso.
	{Rule: "procparse", File: "internal/restore/task.go"},
}
