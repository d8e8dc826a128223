package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"
)

const (
	pageSize = 4096
	rssLimit = 64 << 10 // KiB
)

func minDur(ds []time.Duration) time.Duration { return slices.Min(ds) }

// median of paired ratios: robust to one run disturbed by the machine.
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmtRatios(xs []float64) string {
	out := "("
	for i, x := range xs {
		if i > 0 {
			out += ", "
		}
		out += fmt.Sprintf("%.2f", x)
	}
	return out + ")"
}

func secs(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = d.Seconds()
	}
	return out
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func gbps(n int64, d time.Duration) string {
	return fmt.Sprintf("%.2f GB/s", float64(n)/d.Seconds()/1e9)
}

// bigTarget measures figures 1, 3, 4 and the frozen time of figure 5 on a
// process with -size MiB of touched anonymous memory.
func (e *env) bigTarget(r *report) error {
	pages := e.cfg.sizeMiB << 20 / pageSize
	bytesToWrite := int64(pages) * pageSize // until the first dump says how many
	var (
		dumpWall, frozen, restoreWall, writeBase, readBase, touchBase []time.Duration
		// Paired ratios: each cryo run against the baselines measured right
		// before and after it, so that the machine's drift between minutes
		// cancels out.
		dumpPair, restorePair []float64
		dumpRSS, restoreRSS   []int64
		pagesBytes, imgBytes  int64
	)
	for i := 0; i <= e.cfg.reps; i++ {
		what := "warm-up"
		if i > 0 {
			what = fmt.Sprintf("%d/%d", i, e.cfg.reps)
		}
		logf("%d MiB target, all pages touched: %s", e.cfg.sizeMiB, what)
		t, err := startTarget(e.tmp, e.mem, "all", strconv.Itoa(pages))
		if err != nil {
			return err
		}
		img := filepath.Join(e.shm, fmt.Sprintf("big-%d", i))
		w1, err := e.base.write(e.shm, bytesToWrite)
		if err != nil {
			t.kill()
			return err
		}
		d, err := e.runCryo("dump", "-t", strconv.Itoa(t.pid), "-D", img)
		if err != nil {
			t.kill()
			return err
		}
		if err := t.waitGone(); err != nil {
			return err
		}
		st, err := dumpStats(img)
		if err != nil {
			return err
		}
		bytesToWrite = int64(st.GetPagesWritten()) * pageSize
		w2, err := e.base.write(e.shm, bytesToWrite)
		if err != nil {
			return err
		}
		total, pb, files, err := dirSizes(img)
		if err != nil {
			return err
		}
		r1, n, err := e.base.read(files)
		if err != nil {
			return err
		}
		t1, err := e.base.touch(n)
		if err != nil {
			return err
		}
		rs, err := e.runCryo("restore", "-D", img, "-d")
		if err != nil {
			return err
		}
		track(t.pid, t.bin)
		if err := t.killRestored(); err != nil {
			return err
		}
		r2, _, err := e.base.read(files)
		if err != nil {
			return err
		}
		t2, err := e.base.touch(n)
		if err != nil {
			return err
		}
		if err := os.RemoveAll(img); err != nil {
			return err
		}
		logf("  dump %v (frozen %v, %d KiB RSS), write %v/%v; restore %v (%d KiB RSS), read %v/%v + touch %v/%v",
			d.wall.Round(time.Millisecond), (time.Duration(st.GetFrozenTime()) * time.Microsecond).Round(time.Millisecond), d.maxRSS,
			w1.Round(time.Millisecond), w2.Round(time.Millisecond), rs.wall.Round(time.Millisecond), rs.maxRSS,
			r1.Round(time.Millisecond), r2.Round(time.Millisecond), t1.Round(time.Millisecond), t2.Round(time.Millisecond))
		if i == 0 {
			continue
		}
		dumpWall = append(dumpWall, d.wall)
		frozen = append(frozen, time.Duration(st.GetFrozenTime())*time.Microsecond)
		restoreWall = append(restoreWall, rs.wall)
		writeBase = append(writeBase, w1, w2)
		readBase = append(readBase, r1, r2)
		touchBase = append(touchBase, t1, t2)
		dumpPair = append(dumpPair, float64(d.wall)/float64((w1+w2)/2))
		restorePair = append(restorePair, float64(rs.wall)/float64((r1+r2)/2+(t1+t2)/2))
		dumpRSS = append(dumpRSS, d.maxRSS)
		restoreRSS = append(restoreRSS, rs.maxRSS)
		pagesBytes, imgBytes = pb, total
	}
	dw, fz, wb := minDur(dumpWall), minDur(frozen), minDur(writeBase)
	rw, rb, tb := minDur(restoreWall), minDur(readBase), minDur(touchBase)
	size := fmt.Sprintf("%d MiB", e.cfg.sizeMiB)
	r.add(figure{
		ID: "1", Name: "dump " + size + " ÷ plain write of its pages",
		Value: median(dumpPair), Unit: "x", Max: 1.5,
		Detail: fmt.Sprintf("median of %d paired runs %s; best of each: cryo dump %s, write %s (%s) %s = %.3fx",
			len(dumpPair), fmtRatios(dumpPair), ms(dw), mib(bytesToWrite), gbps(bytesToWrite, wb), ms(wb), ratio(dw, wb)),
	})
	r.add(figure{
		ID: "1f", Name: "  frozen time (stats-dump) ÷ same write",
		Value: ratio(fz, wb), Unit: "x",
		Detail: fmt.Sprintf("frozen %s; images %s (pages %s)", ms(fz), mib(imgBytes), mib(pagesBytes)),
	})
	r.add(figure{
		ID: "3", Name: "restore " + size + " ÷ (read pages + fill fresh memory)",
		Value: median(restorePair), Unit: "x", Max: 1.5,
		Detail: fmt.Sprintf("median of %d paired runs %s; best of each: cryo restore -d %s, read %s (%s) + touch %s (%s) = %.3fx",
			len(restorePair), fmtRatios(restorePair), ms(rw), ms(rb), gbps(pagesBytes, rb), ms(tb), gbps(pagesBytes, tb), ratio(rw, rb+tb)),
	})
	r.add(figure{
		ID: "4d", Name: "peak RSS of cryo dump " + size + " ÷ 64 MiB",
		Value: float64(slices.Max(dumpRSS)) / rssLimit, Unit: "x", Max: 1,
		Detail: fmt.Sprintf("ru_maxrss %s (max of %d runs)", mib(slices.Max(dumpRSS)<<10), len(dumpRSS)),
	})
	r.add(figure{
		ID: "4r", Name: "peak RSS of cryo restore " + size + " ÷ 64 MiB",
		Value: float64(slices.Max(restoreRSS)) / rssLimit, Unit: "x", Max: 1,
		Detail: fmt.Sprintf("ru_maxrss %s (max of %d runs)", mib(slices.Max(restoreRSS)<<10), len(restoreRSS)),
	})
	r.add(figure{
		ID: "5f", Name: "frozen time of the " + size + " target",
		Value: float64(fz.Microseconds()) / 1000, Unit: "ms",
		Detail: fmt.Sprintf("%.0f%% of the dump's wall time", 100*fz.Seconds()/dw.Seconds()),
	})
	r.Samples["dump_wall_s"] = secs(dumpWall)
	r.Samples["dump_frozen_s"] = secs(frozen)
	r.Samples["write_baseline_s"] = secs(writeBase)
	r.Samples["restore_wall_s"] = secs(restoreWall)
	r.Samples["read_baseline_s"] = secs(readBase)
	r.Samples["touch_baseline_s"] = secs(touchBase)
	r.Samples["dump_maxrss_kib"] = floats(dumpRSS)
	r.Samples["restore_maxrss_kib"] = floats(restoreRSS)
	return nil
}

func floats(xs []int64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = float64(x)
	}
	return out
}

func ratio(a, b time.Duration) float64 { return a.Seconds() / b.Seconds() }

// touched returns the N of the target's "READY N" line.
func (t *target) touched() int {
	b, _ := os.ReadFile(t.out)
	i := bytes.Index(b, []byte("READY "))
	if i < 0 {
		return 0
	}
	f := bytes.Fields(b[i+len("READY "):])
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(string(f[0]))
	return n
}

// sparseTargets measures figure 2: the image of a -size MiB process of which
// 10% of the pages were written, scattered or in runs.
func (e *env) sparseTargets(r *report) error {
	pages := e.cfg.sizeMiB << 20 / pageSize
	nominal := int64(pages) * pageSize
	variants := []struct {
		id, name string
		args     []string
	}{
		{"2s", "every 10th page", []string{"every", strconv.Itoa(pages), "10"}},
		{"2r", "10% in 256 KiB runs", []string{"runs", strconv.Itoa(pages), "64", "10"}},
	}
	for _, v := range variants {
		logf("%d MiB target, %s", e.cfg.sizeMiB, v.name)
		t, err := startTarget(e.tmp, e.mem, v.args...)
		if err != nil {
			return err
		}
		img := filepath.Join(e.shm, "sparse-"+v.id)
		d, err := e.runCryo("dump", "-t", strconv.Itoa(t.pid), "-D", img)
		if err != nil {
			t.kill()
			return err
		}
		if err := t.waitGone(); err != nil {
			return err
		}
		st, err := dumpStats(img)
		if err != nil {
			return err
		}
		total, pb, _, err := dirSizes(img)
		if err != nil {
			return err
		}
		// The image must also restore, or its size proves nothing.
		rs, err := e.runCryo("restore", "-D", img, "-d")
		if err != nil {
			return err
		}
		track(t.pid, t.bin)
		if err := t.killRestored(); err != nil {
			return err
		}
		if err := os.RemoveAll(img); err != nil {
			return err
		}
		r.add(figure{
			ID: v.id, Name: fmt.Sprintf("image ÷ %d MiB, %s", e.cfg.sizeMiB, v.name),
			Value: float64(total) / float64(nominal), Unit: "x", Max: 0.12,
			Detail: fmt.Sprintf("images %s (pages %s, %d pages written, %d touched); dump %s, restore %s",
				mib(total), mib(pb), st.GetPagesWritten(), t.touched(), ms(d.wall), ms(rs.wall)),
		})
	}
	return nil
}

// spread gives the per-1000-VMA cost of each repetition on its own (the two
// targets of one repetition ran back to back, so their difference is
// paired), as min–max over the runs: on this machine one figure hides how
// much the runs disagree.
func spread(many, one []time.Duration, k float64) string {
	var per []float64
	for i := range min(len(many), len(one)) {
		per = append(per, float64((many[i]-one[i]).Microseconds())/1000/k)
	}
	if len(per) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f–%.1f ms (median %.1f)", slices.Min(per), slices.Max(per), median(per))
}

func countVMAs(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return 0, err
	}
	return bytes.Count(b, []byte("\n")), nil
}

// vmaTargets measures the per-VMA cost of figure 5: a target of -vmas VMAs
// of one touched page each against a one-VMA target of as many touched pages.
func (e *env) vmaTargets(r *report) error {
	n := strconv.Itoa(e.cfg.vmas)
	type side struct {
		args                  []string
		dump, frozen, restore []time.Duration
		vmas                  int
		rss                   int64
	}
	many := &side{args: []string{"vmas", n}}
	one := &side{args: []string{"all", n}}
	for i := 0; i <= e.cfg.reps; i++ {
		what := "warm-up"
		if i > 0 {
			what = fmt.Sprintf("%d/%d", i, e.cfg.reps)
		}
		logf("%s VMAs vs 1 VMA of %s pages: %s", n, n, what)
		order := []*side{many, one}
		if i%2 == 1 {
			order = []*side{one, many}
		}
		ts := map[*side]*target{}
		imgs := map[*side]string{}
		defer func() {
			for _, t := range ts {
				t.kill()
			}
		}()
		for j, s := range order {
			t, err := startTarget(e.tmp, e.mem, s.args...)
			if err != nil {
				return err
			}
			ts[s] = t
			imgs[s] = filepath.Join(e.shm, fmt.Sprintf("vmas-%d-%d", i, j))
			if s.vmas, err = countVMAs(t.pid); err != nil {
				return err
			}
		}
		for _, s := range order {
			t := ts[s]
			d, err := e.runCryo("dump", "-t", strconv.Itoa(t.pid), "-D", imgs[s])
			if err != nil {
				return err
			}
			if err := t.waitGone(); err != nil {
				return err
			}
			st, err := dumpStats(imgs[s])
			if err != nil {
				return err
			}
			if i > 0 {
				s.dump = append(s.dump, d.wall)
				s.frozen = append(s.frozen, time.Duration(st.GetFrozenTime())*time.Microsecond)
				s.rss = max(s.rss, d.maxRSS)
			}
		}
		for _, s := range order {
			t := ts[s]
			rs, err := e.runCryo("restore", "-D", imgs[s], "-d")
			if err != nil {
				return err
			}
			track(t.pid, t.bin)
			if err := t.killRestored(); err != nil {
				return err
			}
			if i > 0 {
				s.restore = append(s.restore, rs.wall)
				s.rss = max(s.rss, rs.maxRSS)
			}
			if err := os.RemoveAll(imgs[s]); err != nil {
				return err
			}
		}
	}
	k := float64(many.vmas-one.vmas) / 1000
	per := func(a, b []time.Duration) float64 {
		return float64((minDur(a) - minDur(b)).Microseconds()) / 1000 / k
	}
	pair := func(a, b []time.Duration) string {
		return fmt.Sprintf("%d VMAs %s, %d VMAs %s", many.vmas, ms(minDur(a)), one.vmas, ms(minDur(b)))
	}
	r.add(figure{ID: "5d", Name: "dump time per 1000 VMAs", Value: per(many.dump, one.dump), Unit: "ms",
		Detail: pair(many.dump, one.dump) + "; per run " + spread(many.dump, one.dump, k)})
	r.add(figure{ID: "5z", Name: "frozen time per 1000 VMAs", Value: per(many.frozen, one.frozen), Unit: "ms", Detail: pair(many.frozen, one.frozen)})
	r.add(figure{ID: "5r", Name: "restore time per 1000 VMAs", Value: per(many.restore, one.restore), Unit: "ms",
		Detail: pair(many.restore, one.restore) + fmt.Sprintf("; per run %s; cryo peak RSS %s",
			spread(many.restore, one.restore, k), mib(max(many.rss, one.rss)<<10))})
	r.Samples["vmas_many_dump_s"] = secs(many.dump)
	r.Samples["vmas_one_dump_s"] = secs(one.dump)
	r.Samples["vmas_many_frozen_s"] = secs(many.frozen)
	r.Samples["vmas_one_frozen_s"] = secs(one.frozen)
	r.Samples["vmas_many_restore_s"] = secs(many.restore)
	r.Samples["vmas_one_restore_s"] = secs(one.restore)
	return nil
}
