// kerasop-hostpath-provisioner: dynamic provisioning of hostPath PersistentVolumes for the
// single-node local cluster (cluster/up.sh). Standard library only.
//
// Every interval it lists StorageClasses whose provisioner is -name, then
//   - for each Pending PVC of such a class that the PV controller handed to us (annotation
//     volume.kubernetes.io/storage-provisioner) and that has no volume yet, it makes a
//     world-writable directory under -root (so pods running as any UID can write) and creates
//     a PV pre-bound to the claim (claimRef), which the PV controller then binds;
//   - for each Released PV it provisioned whose reclaim policy is Delete, it removes the
//     directory and deletes the PV.
//
// Unlike kube-controller-manager's built-in hostpath provisioner (a 0750 root-owned directory
// under /tmp/hostpath_pv, unusable by non-root pods) the directories live under the cluster's
// own state directory and down.sh removes them.
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const (
	annProvisioner     = "volume.kubernetes.io/storage-provisioner"
	annProvisionerBeta = "volume.beta.kubernetes.io/storage-provisioner"
	annSelectedNode    = "volume.kubernetes.io/selected-node"
	annProvisionedBy   = "pv.kubernetes.io/provisioned-by"
)

type meta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace,omitempty"`
	UID         string            `json:"uid,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
}

type storageClass struct {
	Metadata          meta   `json:"metadata"`
	Provisioner       string `json:"provisioner"`
	ReclaimPolicy     string `json:"reclaimPolicy"`
	VolumeBindingMode string `json:"volumeBindingMode"`
}

type pvc struct {
	Metadata meta `json:"metadata"`
	Spec     struct {
		AccessModes      []string `json:"accessModes"`
		StorageClassName *string  `json:"storageClassName"`
		VolumeName       string   `json:"volumeName"`
		VolumeMode       string   `json:"volumeMode"`
		Resources        struct {
			Requests map[string]string `json:"requests"`
		} `json:"resources"`
	} `json:"spec"`
	Status struct {
		Phase string `json:"phase"`
	} `json:"status"`
}

type pv struct {
	Metadata meta `json:"metadata"`
	Spec     struct {
		PersistentVolumeReclaimPolicy string `json:"persistentVolumeReclaimPolicy"`
		HostPath                      *struct {
			Path string `json:"path"`
		} `json:"hostPath"`
	} `json:"spec"`
	Status struct {
		Phase string `json:"phase"`
	} `json:"status"`
}

type list[T any] struct {
	Items []T `json:"items"`
}

type client struct {
	server string
	http   *http.Client
}

func newClient(server, caFile, certFile, keyFile string) (*client, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("no certificates in %s", caFile)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}
	return &client{server: strings.TrimRight(server, "/"), http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}, nil
}

var errConflict = errors.New("conflict")
var errNotFound = errors.New("not found")

func (c *client) do(method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.server+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "kerasop-hostpath-provisioner")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	switch {
	case resp.StatusCode == http.StatusConflict:
		return errConflict
	case resp.StatusCode == http.StatusNotFound:
		return errNotFound
	case resp.StatusCode/100 != 2:
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(data)))
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

type provisioner struct {
	c        *client
	name     string
	root     string
	nodeName string
}

func (p *provisioner) event(claim *pvc, typ, reason, msg string) {
	now := time.Now().UTC().Format(time.RFC3339)
	ev := map[string]any{
		"apiVersion": "v1", "kind": "Event",
		"metadata": map[string]any{"generateName": claim.Metadata.Name + ".", "namespace": claim.Metadata.Namespace},
		"involvedObject": map[string]any{
			"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": claim.Metadata.Namespace,
			"name": claim.Metadata.Name, "uid": claim.Metadata.UID,
		},
		"type": typ, "reason": reason, "message": msg, "firstTimestamp": now, "lastTimestamp": now, "count": 1,
		"source": map[string]any{"component": p.name},
	}
	if err := p.c.do("POST", "/api/v1/namespaces/"+claim.Metadata.Namespace+"/events", ev, nil); err != nil {
		log.Printf("event for %s/%s: %v", claim.Metadata.Namespace, claim.Metadata.Name, err)
	}
}

func (p *provisioner) provision(claim *pvc, class *storageClass) error {
	pvName := "pvc-" + claim.Metadata.UID
	if claim.Spec.VolumeMode == "Block" {
		return fmt.Errorf("volumeMode Block is not supported")
	}
	size := claim.Spec.Resources.Requests["storage"]
	if size == "" {
		size = "1Gi"
	}
	dir := filepath.Join(p.root, fmt.Sprintf("%s_%s_%s", claim.Metadata.Namespace, claim.Metadata.Name, pvName))
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o777); err != nil { // umask would have narrowed MkdirAll's mode
		return err
	}
	reclaim := class.ReclaimPolicy
	if reclaim == "" {
		reclaim = "Delete"
	}
	volumeMode := claim.Spec.VolumeMode
	if volumeMode == "" {
		volumeMode = "Filesystem"
	}
	body := map[string]any{
		"apiVersion": "v1", "kind": "PersistentVolume",
		"metadata": map[string]any{
			"name":        pvName,
			"annotations": map[string]string{annProvisionedBy: p.name},
		},
		"spec": map[string]any{
			"capacity":                      map[string]string{"storage": size},
			"accessModes":                   claim.Spec.AccessModes,
			"persistentVolumeReclaimPolicy": reclaim,
			"storageClassName":              class.Metadata.Name,
			"volumeMode":                    volumeMode,
			"hostPath":                      map[string]string{"path": dir, "type": "Directory"},
			"claimRef": map[string]string{
				"apiVersion": "v1", "kind": "PersistentVolumeClaim",
				"namespace": claim.Metadata.Namespace, "name": claim.Metadata.Name, "uid": claim.Metadata.UID,
			},
			"nodeAffinity": map[string]any{"required": map[string]any{"nodeSelectorTerms": []any{
				map[string]any{"matchExpressions": []any{map[string]any{
					"key": "kubernetes.io/hostname", "operator": "In", "values": []string{p.nodeName},
				}}},
			}}},
		},
	}
	err := p.c.do("POST", "/api/v1/persistentvolumes", body, nil)
	if errors.Is(err, errConflict) {
		return nil // made on an earlier pass
	}
	if err != nil {
		return err
	}
	log.Printf("provisioned %s for %s/%s at %s", pvName, claim.Metadata.Namespace, claim.Metadata.Name, dir)
	p.event(claim, "Normal", "ProvisioningSucceeded", fmt.Sprintf("Successfully provisioned volume %s at %s", pvName, dir))
	return nil
}

func (p *provisioner) reclaim(vol *pv) error {
	if vol.Spec.HostPath != nil {
		path := filepath.Clean(vol.Spec.HostPath.Path)
		if !strings.HasPrefix(path, filepath.Clean(p.root)+string(os.PathSeparator)) {
			return fmt.Errorf("refusing to delete %s: not under %s", path, p.root)
		}
		if err := os.RemoveAll(path); err != nil {
			return err
		}
	}
	err := p.c.do("DELETE", "/api/v1/persistentvolumes/"+vol.Metadata.Name, nil, nil)
	if err != nil && !errors.Is(err, errNotFound) {
		return err
	}
	log.Printf("deleted %s", vol.Metadata.Name)
	return nil
}

func (p *provisioner) pass() error {
	var classes list[storageClass]
	if err := p.c.do("GET", "/apis/storage.k8s.io/v1/storageclasses", nil, &classes); err != nil {
		return err
	}
	ours := map[string]*storageClass{}
	for i := range classes.Items {
		if classes.Items[i].Provisioner == p.name {
			ours[classes.Items[i].Metadata.Name] = &classes.Items[i]
		}
	}
	var claims list[pvc]
	if err := p.c.do("GET", "/api/v1/persistentvolumeclaims", nil, &claims); err != nil {
		return err
	}
	for i := range claims.Items {
		claim := &claims.Items[i]
		if claim.Status.Phase != "Pending" || claim.Spec.VolumeName != "" || claim.Spec.StorageClassName == nil {
			continue
		}
		class, ok := ours[*claim.Spec.StorageClassName]
		if !ok {
			continue
		}
		a := claim.Metadata.Annotations
		if a[annProvisioner] != p.name && a[annProvisionerBeta] != p.name {
			continue // the PV controller has not asked for a volume yet (e.g. a matching PV may exist)
		}
		if class.VolumeBindingMode == "WaitForFirstConsumer" && a[annSelectedNode] == "" {
			continue
		}
		if err := p.provision(claim, class); err != nil {
			log.Printf("provisioning %s/%s: %v", claim.Metadata.Namespace, claim.Metadata.Name, err)
			p.event(claim, "Warning", "ProvisioningFailed", err.Error())
		}
	}
	var vols list[pv]
	if err := p.c.do("GET", "/api/v1/persistentvolumes", nil, &vols); err != nil {
		return err
	}
	for i := range vols.Items {
		vol := &vols.Items[i]
		if vol.Metadata.Annotations[annProvisionedBy] == p.name && vol.Status.Phase == "Released" &&
			vol.Spec.PersistentVolumeReclaimPolicy == "Delete" {
			if err := p.reclaim(vol); err != nil {
				log.Printf("reclaiming %s: %v", vol.Metadata.Name, err)
			}
		}
	}
	return nil
}

func main() {
	server := flag.String("server", "", "API server URL")
	ca := flag.String("ca", "", "CA bundle of the API server")
	cert := flag.String("cert", "", "client certificate")
	key := flag.String("key", "", "client key")
	name := flag.String("name", "kerasop.local/hostpath", "provisioner name (StorageClass .provisioner)")
	root := flag.String("root", "", "directory that holds the volumes")
	node := flag.String("node", "", "node name for the PVs' node affinity")
	interval := flag.Duration("interval", 2*time.Second, "time between passes")
	flag.Parse()
	if *server == "" || *ca == "" || *cert == "" || *key == "" || *root == "" || *node == "" {
		flag.Usage()
		os.Exit(2)
	}
	c, err := newClient(*server, *ca, *cert, *key)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.MkdirAll(*root, 0o755); err != nil {
		log.Fatal(err)
	}
	p := &provisioner{c: c, name: *name, root: *root, nodeName: *node}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	log.Printf("%s: volumes under %s, node %s, every %s", *name, *root, *node, *interval)
	t := time.NewTicker(*interval)
	defer t.Stop()
	for {
		if err := p.pass(); err != nil {
			log.Printf("pass: %v", err)
		}
		select {
		case s := <-sig:
			log.Printf("%v: exiting", s)
			return
		case <-t.C:
		}
	}
}
